package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// dialtrap health exits 0 only when a dialtrap node answers /health-check with status OK; a
// server that is down, not a node, or failing is 1; bad flags are 2.
func TestHealth(t *testing.T) {
	serve := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	node := serve(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health-check" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Powered-By", "dialtrap")
		w.Write([]byte(`{"status": "OK", "message": "Hello from dialtrap!", "version": "9.9.9"}`))
	})
	notNode := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status": "OK"}`)) // no X-Powered-By: a proxy's or another server's answer
	})
	failing := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Powered-By", "dialtrap")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error": "shutting down"}`))
	})
	notOK := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Powered-By", "dialtrap")
		w.Write([]byte(`{"status": "starting"}`))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	nodeAddr := strings.TrimPrefix(node, "http://")
	_, port, _ := net.SplitHostPort(nodeAddr)

	for _, c := range []struct {
		name       string
		args       []string
		code       int
		out, errOf string
	}{
		{"healthy", []string{"--api-url", node}, exitOK, "ok: dialtrap 9.9.9 at " + node, ""},
		{"healthy, trailing slash", []string{"--api-url", node + "/"}, exitOK, "ok: dialtrap 9.9.9", ""},
		{"healthy by --api-addr", []string{"--api-addr", nodeAddr}, exitOK, "ok: dialtrap 9.9.9 at " + node, ""},
		{"wildcard --api-addr asks loopback", []string{"--api-addr", "0.0.0.0:" + port}, exitOK, "ok: dialtrap 9.9.9 at " + node, ""},
		{"quiet", []string{"-q", "--api-url", node}, exitOK, "", ""},
		{"not a node", []string{"--api-url", notNode}, exitRuntime, "", "is it a dialtrap node?"},
		{"failing", []string{"--api-url", failing}, exitRuntime, "", "shutting down"},
		{"not OK", []string{"--api-url", notOK}, exitRuntime, "", "unhealthy"},
		{"down", []string{"--api-url", down, "--timeout", "2s"}, exitRuntime, "", "is the node running with -a"},
		{"down, quiet", []string{"-q", "--api-url", down}, exitRuntime, "", ""},
		{"bad url", []string{"--api-url", "127.0.0.1:8082"}, exitUsage, "", "give the node's API as http://host:port"},
		{"stray argument", []string{"now"}, exitUsage, "", "unexpected argument"},
		{"bad flag", []string{"--nope"}, exitUsage, "", "unknown flag"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := runHealth(c.args, &out, &errOut)
			if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errOut.String(), c.errOf) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), c.code, c.out, c.errOf)
			}
			if (c.out == "" && out.Len() > 0) || (c.errOf == "" && errOut.Len() > 0) {
				t.Errorf("printed %q %q, want nothing there", out.String(), errOut.String())
			}
		})
	}
}
