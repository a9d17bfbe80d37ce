package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dialtrap/dialtrap/client"
)

// errPeersOff is returned by peers when the node runs without -p and --opendht.
var errPeersOff = errors.New("peer-to-peer is off on this node (start it with -p, or --opendht)")

// nodeAPI is the SDK's client as the subcommands use it: its errors say which flag to fix.
type nodeAPI struct {
	*client.Client
}

// CheckURL refuses a mistyped --api-url as a usage error before asking anything.
func (c nodeAPI) CheckURL() error {
	if err := c.Client.CheckURL(); err != nil {
		return fmt.Errorf("--api-url %q: give the node's API as http://host:port", c.BaseURL)
	}
	return nil
}

// explain turns the SDK's errors into the command line's.
func (c nodeAPI) explain(err error) error {
	var api *client.APIError
	var conn *client.ConnError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrBadBaseURL):
		return c.CheckURL()
	case errors.As(err, &api) && api.Status == http.StatusUnauthorized:
		if c.Token != "" {
			return fmt.Errorf("%s: %s: the node refused the token given (--api-token or DIALTRAP_API_TOKEN): check it against the node's --api-token", api.URL, api.StatusText)
		}
		return fmt.Errorf("%s: %s: give the node's token with --api-token or DIALTRAP_API_TOKEN", api.URL, api.StatusText)
	case errors.As(err, &conn):
		return fmt.Errorf("ask %s (is the node running with -a, and --api-url right?): %w", strings.TrimRight(c.BaseURL, "/"), conn.Err)
	}
	return err
}

func (c nodeAPI) IP(ctx context.Context, ip string) (client.Lookup, error) {
	l, err := c.Client.IP(ctx, ip)
	return l, c.explain(err)
}

func (c nodeAPI) Number(ctx context.Context, n, match string) (client.Lookup, error) {
	l, err := c.Client.Number(ctx, n, client.WithMatch(client.Match(match)))
	return l, c.explain(err)
}

// Health returns the version a healthy node reports.
func (c nodeAPI) Health(ctx context.Context) (string, error) {
	h, err := c.Client.Health(ctx)
	return h.Version, c.explain(err)
}

// Peers returns the node's /peers report as the JSON it sent.
func (c nodeAPI) Peers(ctx context.Context) (json.RawMessage, error) {
	b, err := c.Client.Peers(ctx)
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", c.BaseURL, errPeersOff)
	}
	return b, c.explain(err)
}

// JSON asks path (with its query) and decodes the node's 200 answer into v.
func (c nodeAPI) JSON(ctx context.Context, path string, v any) error {
	return c.explain(c.GetJSON(ctx, path, v))
}
