// Package hello holds the HttpHello sample: the smallest HTTP-triggered function.
package hello

import (
	"context"
	"net/http"
	"strings"

	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Register adds HttpHello: GET|POST /api/hello?name=X greets X. POST may carry
// the name as JSON {"name": "X"} instead.
func Register(r *registry.Registry) error {
	return r.Add(httptrigger.Function("HttpHello",
		httptrigger.Trigger{Route: "hello", Methods: []string{"GET", "POST"}, AuthLevel: httptrigger.Anonymous},
		hello))
}

func hello(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
	name := strings.TrimSpace(req.Query.Get("name"))
	if name == "" && len(req.Body) > 0 {
		var body struct {
			Name string `json:"name"`
		}
		if err := req.Bind(&body); err != nil {
			return httptrigger.Text(http.StatusBadRequest, err.Error()), nil
		}
		name = strings.TrimSpace(body.Name)
	}
	if name == "" {
		return httptrigger.Text(http.StatusBadRequest, "Pass a name in the query string (?name=Ada) or in a JSON body {\"name\": \"Ada\"}."), nil
	}
	registry.Logger(ctx).Info("greeting", "name", name)
	return httptrigger.Text(http.StatusOK, "Hello, "+name+". This HTTP triggered function executed successfully."), nil
}
