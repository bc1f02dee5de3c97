package azurite_test

import (
	"context"
	"testing"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/tests/azurite"
)

func TestStartServesQueues(t *testing.T) {
	inst := azurite.Start(t)
	c, err := azstorage.Open(inst.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Queue.CreateQueue(context.Background(), "probe", nil); err != nil {
		t.Fatalf("create queue on fresh azurite: %v", err)
	}
	if got := c.Requests.Load(); got != 1 {
		t.Fatalf("request counter = %d, want 1", got)
	}
}
