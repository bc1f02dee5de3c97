// Package hello holds the HTTP samples: HttpHello, the smallest
// HTTP-triggered function, and HttpEcho, a key-protected function that shows
// what a handler receives.
package hello

import (
	"context"
	"net/http"
	"strings"

	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Register adds the HTTP samples:
//
//   - HttpHello: GET|POST /api/hello?name=X greets X (anonymous). POST may
//     carry the name as JSON {"name": "X"} instead.
//   - HttpEcho: any method on /api/echo/{*path} (authLevel function) answers
//     with JSON of the method, the route value, the query, the request
//     headers (without keys, Authorization and cookies) and the body.
func Register(r *registry.Registry) error {
	if err := r.Add(httptrigger.Function("HttpHello",
		httptrigger.Trigger{Route: "hello", Methods: []string{"GET", "POST"}, AuthLevel: httptrigger.Anonymous},
		hello)); err != nil {
		return err
	}
	return r.Add(httptrigger.Function("HttpEcho",
		httptrigger.Trigger{Route: "echo/{*path}", AuthLevel: httptrigger.FunctionLevel},
		echo))
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

// Echo is HttpEcho's answer.
type Echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   map[string][]string `json:"query"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

func echo(_ context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
	q := map[string][]string{}
	for k, v := range req.Query {
		if !strings.EqualFold(k, "code") { // never echo a key
			q[k] = v
		}
	}
	h := map[string][]string{}
	for k, v := range req.Header {
		switch strings.ToLower(k) {
		case "x-functions-key", "authorization", "cookie": // credentials stay private
		default:
			h[k] = v
		}
	}
	res := httptrigger.JSON(http.StatusOK, Echo{Method: req.Method, Path: req.Params["path"], Query: q, Headers: h, Body: string(req.Body)})
	res.Header.Set("X-Echo-Method", req.Method)
	return res, nil
}
