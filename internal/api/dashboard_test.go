package api

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/dashboard"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/live"
)

// dashServer starts an API server with the dashboard and the live feed.
func dashServer(t *testing.T, token string) (*Server, *live.Broadcaster) {
	t.Helper()
	lv := live.New(live.Options{})
	srv := New(Config{Addr: "127.0.0.1:0", Store: seed(t), Token: token, Version: "1.2.3",
		Dashboard: dashboard.New(), Live: lv})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv, lv
}

// The page and its assets load without the token, with their own content types, a strict
// CSP and the API's contract headers; the data and the live feed still need the token.
func TestDashboardRoutes(t *testing.T) {
	const token = "s3cret"
	srv, _ := dashServer(t, token)
	base := "http://" + srv.Addr().String()
	for _, c := range []struct{ path, ctype, body string }{
		{"/", "text/html; charset=utf-8", "<script src=\"/dashboard/app.js?v="},
		{"/dashboard/app.js", "text/javascript; charset=utf-8", "'use strict'"},
		{"/dashboard/app.css", "text/css; charset=utf-8", ".mapbox"},
		{"/dashboard/world.svg", "image/svg+xml", `<path id="DE"`},
	} {
		resp, body := get(t, base+c.path, "")
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("Content-Type") != c.ctype || !strings.Contains(body, c.body) {
			t.Errorf("GET %s: %d %q, body has %q: %v", c.path, resp.StatusCode, h.Get("Content-Type"), c.body, strings.Contains(body, c.body))
		}
		if h.Get("Content-Security-Policy") != dashboard.CSP || h.Get("X-Powered-By") != "dialtrap" ||
			h.Get("X-Dialtrap-Version") != "1.2.3" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("ETag") == "" {
			t.Errorf("GET %s headers: %v", c.path, h)
		}
	}
	for _, c := range []struct {
		path, token string
		code        int
	}{
		{"/dashboard/nothing.js", "", 404},
		{"/dashboard/", "", 404},
		{"/stats", "", 401},
		{"/stats/countries", "", 401},
		{"/events/live", "", 401},
		{"/events/live", "wrong", 401},
		{"/index.html", "", 401}, // not a dashboard path: unknown routes keep asking for the token
		{"/index.html", token, 404},
	} {
		if resp, body := get(t, base+c.path, c.token); resp.StatusCode != c.code {
			t.Errorf("GET %s (token %q): %d, want %d: %s", c.path, c.token, resp.StatusCode, c.code, body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// Assets revalidate by ETag; one asked for by its version is cached for good.
func TestDashboardCaching(t *testing.T) {
	srv, _ := dashServer(t, "")
	base := "http://" + srv.Addr().String()
	resp, page := get(t, base+"/", "")
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Fatalf("page Cache-Control %q", cc)
	}
	i := strings.Index(page, "/dashboard/app.js?v=")
	if i < 0 {
		t.Fatal("the page links app.js without a version")
	}
	versioned := page[i : i+len("/dashboard/app.js?v=")+16]
	resp, _ = get(t, base+versioned, "")
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
		t.Fatalf("%s Cache-Control %q", versioned, cc)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/dashboard/app.js", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r2.StatusCode)
	}
}

// Without the dashboard "/" is the contract's 404 (401 first when a token is set), and
// without the live feed so is /events/live.
func TestDashboardOff(t *testing.T) {
	for _, token := range []string{"", "t"} {
		srv := newServer(t, seed(t), token, false)
		want := http.StatusNotFound
		if token != "" {
			want = http.StatusUnauthorized
		}
		for _, p := range []string{"/", "/dashboard/app.js"} {
			if resp, body := get(t, srv.URL+p, ""); resp.StatusCode != want || !strings.Contains(body, `"error"`) {
				t.Errorf("token %q: GET %s: %d %s", token, p, resp.StatusCode, body)
			}
		}
		if resp, _ := get(t, srv.URL+"/events/live", token); resp.StatusCode != http.StatusNotFound {
			t.Errorf("token %q: /events/live without a feed: %d", token, resp.StatusCode)
		}
	}
}

// The live feed streams with the token, and ends when the server shuts down: Close does not
// wait for browsers to go.
func TestLiveFeedRouteEndsOnShutdown(t *testing.T) {
	const token = "s3cret"
	srv, lv := dashServer(t, token)
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.Addr().String()+"/events/live", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" ||
		resp.Header.Get("X-Powered-By") != "dialtrap" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	rd := bufio.NewReader(resp.Body)
	if l, err := rd.ReadString('\n'); err != nil || l != ": dialtrap live feed\n" {
		t.Fatalf("first line %q %v", l, err)
	}
	lv.Write(context.Background(), []*event.Event{{AppName: event.AppName, UUID: "u1", CalledNumber: "0049301234"}})
	for {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "data: ") && strings.Contains(l, `"called_number":"0049301234"`) {
			break
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with a live stream open", d)
	}
	if _, err := rd.ReadString(0); err == nil {
		t.Fatal("stream still open after Close")
	}
}
