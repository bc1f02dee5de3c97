// Package functions is the app's own functions: each sample lives in a
// sub-package with its own Register, and Register here adds them all. The host
// calls Register once at start-up.
package functions

import (
	"errors"

	"github.com/stratus-dev/stratus/functions/approval"
	"github.com/stratus-dev/stratus/functions/billing"
	"github.com/stratus-dev/stratus/functions/entities"
	"github.com/stratus-dev/stratus/functions/hello"
	"github.com/stratus-dev/stratus/functions/orchestrations"
	"github.com/stratus-dev/stratus/functions/orders"
	"github.com/stratus-dev/stratus/functions/storage"
	"github.com/stratus-dev/stratus/host/registry"
)

// Register registers every function of the app.
func Register(r *registry.Registry) error {
	return errors.Join(
		hello.Register(r),
		approval.Register(r),
		billing.Register(r),
		storage.Register(r),
		orchestrations.Register(r),
		orders.Register(r),
		entities.Register(r),
	)
}
