package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// /metrics serves Config.Metrics behind the token like every data route, answers other
// methods 405 like every route, and is an unknown route (404) when metrics are off.
func TestMetricsRoute(t *testing.T) {
	prom := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		io.WriteString(w, "dialtrap_up 1\n")
	})
	on := httptest.NewServer(Handler(Config{Store: seed(t), Version: "1", Token: "s3cret", Metrics: prom}))
	defer on.Close()
	off := httptest.NewServer(Handler(Config{Store: seed(t), Version: "1"}))
	defer off.Close()
	for _, tt := range []struct {
		name, url, method, auth string
		status                  int
		ctype, body             string
	}{
		{"no token", on.URL, "GET", "", 401, "application/json", `"A valid bearer token is required."`},
		{"wrong token", on.URL, "GET", "Bearer nope", 401, "application/json", "bearer token"},
		{"token", on.URL, "GET", "Bearer s3cret", 200, "text/plain; version=0.0.4; charset=utf-8", "dialtrap_up 1\n"},
		{"head", on.URL, "HEAD", "Bearer s3cret", 200, "text/plain; version=0.0.4; charset=utf-8", ""},
		{"post", on.URL, "POST", "Bearer s3cret", 405, "application/json", "not allowed"},
		{"off", off.URL, "GET", "", 404, "application/json", "{\n  \"error\": \"" + msgNotFoundRoute + "\"\n}"},
	} {
		req, _ := http.NewRequest(tt.method, tt.url+"/metrics", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != tt.ctype || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: %d %q %q, want %d %q containing %q", tt.name, resp.StatusCode, resp.Header.Get("Content-Type"), body,
				tt.status, tt.ctype, tt.body)
		}
		if resp.Header.Get("X-Dialtrap-Version") != "1" {
			t.Errorf("%s: without the headers every response carries", tt.name)
		}
	}
}

type observation struct {
	pattern string
	status  int
}

// Observe hears of every request with the ServeMux pattern, never the raw path: requests
// refused for want of a token still name their route; those answered before routing name none.
func TestObserveNamesRoutePatterns(t *testing.T) {
	var mu sync.Mutex
	var got []observation
	observe := func(p string, status int, d time.Duration) {
		if d <= 0 {
			t.Errorf("%s: duration %v", p, d)
		}
		mu.Lock()
		got = append(got, observation{p, status})
		mu.Unlock()
	}
	st := seed(t)
	srv := httptest.NewServer(Handler(Config{Store: st, Version: "1", Token: "s3cret", Observe: observe, Now: func() time.Time { return now }}))
	defer srv.Close()
	plain := httptest.NewServer(Handler(Config{Store: st, Version: "1", Token: "s3cret", Now: func() time.Time { return now }}))
	defer plain.Close()
	for _, tt := range []struct {
		method, path string
		token        bool
		want         observation
	}{
		{"GET", "/numbers/100", true, observation{"/numbers/{n}", 200}},
		{"GET", "/numbers/0099999", true, observation{"/numbers/{n}", 404}},
		{"GET", "/ip-addresses/not-an-ip", true, observation{"/ip-addresses/{ip}", 400}},
		{"GET", "/ip-addresses?limit=2", true, observation{"/ip-addresses", 200}},
		{"GET", "/ip-addresses/192.0.2.10", false, observation{"/ip-addresses/{ip}", 401}},
		{"GET", "/health-check", false, observation{"/health-check", 200}},
		{"GET", "/no/such/route", true, observation{"/", 404}},
		{"GET", "/metrics", true, observation{"/metrics", 404}},
		{"POST", "/stats", true, observation{"", 405}},
		{"GET", "/numbers/../stats", true, observation{"", 404}},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		var bodies [2]string
		var status int
		for i, base := range []string{srv.URL, plain.URL} {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			if strings.Contains(tt.path, "..") {
				req.URL.Opaque = tt.path // keep dot segments as sent
			}
			if tt.token {
				req.Header.Set("Authorization", "Bearer s3cret")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies[i], status = resp.Status+string(b), resp.StatusCode
		}
		mu.Lock()
		if tt.want.status != status {
			t.Errorf("%s %s: answered %d, the test expects %d", tt.method, tt.path, status, tt.want.status)
		}
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s %s: observed %+v, want %+v", tt.method, tt.path, got, tt.want)
		}
		mu.Unlock()
		if bodies[0] != bodies[1] {
			t.Errorf("%s %s: the observed answer differs from the plain one:\n%s\n%s", tt.method, tt.path, bodies[0], bodies[1])
		}
	}
	// Open-ended streams are no latency: not observed (here they answer 404, being off).
	mu.Lock()
	got = nil
	mu.Unlock()
	for _, p := range []string{"/feeds/stream", "/events/live"} {
		req, _ := http.NewRequest("GET", srv.URL+p, nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	if len(got) != 0 {
		t.Errorf("streams observed: %+v", got)
	}
	mu.Unlock()
}

// The observing writer hides nothing a streamed list needs: write deadlines and flushes
// reach the connection through it.
func TestStatusWriterUnwraps(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		rc := http.NewResponseController(sw)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through the status writer: %v", err)
		}
		sw.WriteHeader(http.StatusAccepted)
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush through the status writer: %v", err)
		}
		if sw.Status() != http.StatusAccepted {
			t.Errorf("status %d", sw.Status())
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
