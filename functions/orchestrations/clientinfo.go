package orchestrations

import (
	"context"
	"net/http"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// registerClientInfo adds DurableClientInfo: GET /api/durable/client answers
// the binding data of its durableClient binding, the JSON a language SDK's
// durable client is built from (taskHubName, creationUrls, managementUrls,
// baseUrl, requiredQueryStringParameters). The data carries the key that
// opens the management API, so the function needs the master key.
func registerClientInfo(r *registry.Registry) error {
	client := durable.ClientInput("client")
	return r.Add(httptrigger.Function("DurableClientInfo",
		httptrigger.Trigger{Route: "durable/client", Methods: []string{"GET"}, AuthLevel: httptrigger.AdminLevel},
		func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
			return httptrigger.JSON(http.StatusOK, client.BindingData(req)), nil
		},
		registry.WithBindings(client)))
}
