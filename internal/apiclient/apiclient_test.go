package apiclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// server answers every request with status and body, as a dialtrap node when node is set.
func server(t *testing.T, node bool, routes map[string]struct {
	status int
	body   string
}) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if node {
			w.Header().Set("X-Powered-By", "dialtrap")
		}
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error": "A valid bearer token is required."}`))
			return
		}
		rt, ok := routes[r.URL.RequestURI()]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error": "The requested resource could not be found."}`))
			return
		}
		w.WriteHeader(rt.status)
		w.Write([]byte(rt.body))
	}))
	t.Cleanup(s.Close)
	return s
}

type route = struct {
	status int
	body   string
}

func TestLookups(t *testing.T) {
	routes := map[string]route{
		"/ip-addresses/192.0.2.1":                {200, `{"bad_actor_found": "192.0.2.1", "seen_count": "3", "seen_last": "2026-11-23 10:00:00.000000000"}`},
		"/ip-addresses/192.0.2.2":                {404, `{"message": "No bad actor found"}`},
		"/numbers/service?match=exact":           {200, `{"phone_number_found": "service", "seen_count": "1", "seen_last": "x"}`},
		"/numbers/%2E%2E?match=exact":            {200, `{"phone_number_found": "..", "seen_count": "1", "seen_last": "x"}`},
		"/numbers/+4681?match=national":          {200, `{"phone_number_found": "+4681", "matched_numbers": [{"called_number": "004681"}, {"called_number": "900046812"}]}`},
		"/numbers/100%27%20OR%201=1?match=exact": {404, `{"message": "No phone number found"}`},
	}
	c := &Client{BaseURL: server(t, true, routes).URL + "/", Token: "tok"}
	ctx := context.Background()
	if l, err := c.IP(ctx, "192.0.2.1"); err != nil || !l.Known || l.Count != "3" {
		t.Errorf("known IP: %+v %v", l, err)
	}
	if l, err := c.IP(ctx, "192.0.2.2"); err != nil || l.Known {
		t.Errorf("unknown IP: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, "service", "exact"); err != nil || !l.Known {
		t.Errorf("a name as number: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, "..", "exact"); err != nil || !l.Known {
		t.Errorf("a dot segment as number: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, "+4681", "national"); err != nil || !l.Known || strings.Join(l.Matched, ",") != "004681,900046812" {
		t.Errorf("national: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, "100' OR 1=1", "exact"); err != nil || l.Known {
		t.Errorf("escaped payload: %+v %v", l, err)
	}
	// A 404 that is not the node's "not found" (a wrong path) is an error, never "unknown".
	if _, err := (&Client{BaseURL: c.BaseURL + "prefix", Token: "tok"}).IP(ctx, "192.0.2.2"); err == nil {
		t.Error("a route-not-found 404 counted as unknown")
	}
	// Without the token: an error that says how to give one.
	if _, err := (&Client{BaseURL: c.BaseURL}).IP(ctx, "192.0.2.1"); err == nil || !strings.Contains(err.Error(), "--api-token") {
		t.Errorf("401: %v", err)
	}
}

// Only a dialtrap node's own answer counts: the same bodies from another server are errors.
func TestAnswersFromAnotherServerAreErrors(t *testing.T) {
	routes := map[string]route{"/ip-addresses/192.0.2.2": {404, `{"message": "No bad actor found"}`}, "/peers": {200, `{}`}}
	c := &Client{BaseURL: server(t, false, routes).URL, Token: "tok"}
	if _, err := c.IP(context.Background(), "192.0.2.2"); err == nil {
		t.Error("a proxy's 404 passed as unknown")
	}
	if _, err := c.Peers(context.Background()); err == nil {
		t.Error("a peer report from another server accepted")
	}
}

func TestPeers(t *testing.T) {
	on := &Client{BaseURL: server(t, true, map[string]route{"/peers": {200, `{"peer_id": "12D3KooW"}`}}).URL, Token: "tok"}
	if b, err := on.Peers(context.Background()); err != nil || string(b) != `{"peer_id": "12D3KooW"}` {
		t.Errorf("peers: %s %v", b, err)
	}
	off := &Client{BaseURL: server(t, true, map[string]route{"/peers": {404, `{"error": "Peer-to-peer is off on this node (start it with -p)."}`}}).URL, Token: "tok"}
	if _, err := off.Peers(context.Background()); !errors.Is(err, ErrPeersOff) {
		t.Errorf("p2p off: %v, want ErrPeersOff", err)
	}
	for _, bad := range []string{"", "127.0.0.1:8082", "ftp://x", "http://"} {
		if _, err := (&Client{BaseURL: bad}).Peers(context.Background()); err == nil || !strings.Contains(err.Error(), "--api-url") {
			t.Errorf("base URL %q: %v", bad, err)
		}
	}
}
