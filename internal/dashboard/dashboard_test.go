package dashboard

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

func serve(h *Handler, method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// The page runs nothing inline (the CSP would block it, and it keeps probe text inert):
// no inline script or style, no event handler attributes, and every asset it links is
// served, versioned.
func TestPageHasNoInlineCode(t *testing.T) {
	h := New()
	page := serve(h, "GET", "/").Body.String()
	// Every <script> tag has a src (RE2 has no lookahead, so tags are checked one by one).
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, " src=") {
			t.Errorf("inline script tag %s", tag)
		}
	}
	for _, re := range []string{`\son[a-z]+\s*=`, `\sstyle\s*=`, `<style`} {
		if m := regexp.MustCompile(re).FindString(page); m != "" {
			t.Errorf("page has %q", m)
		}
	}
	links := regexp.MustCompile(`"/dashboard/([a-z.]+)\?v=([0-9a-f]{16})"`).FindAllStringSubmatch(page, -1)
	if len(links) != 2 {
		t.Fatalf("versioned links %q", links)
	}
	for _, l := range links {
		rec := serve(h, "GET", "/dashboard/"+l[1]+"?v="+l[2])
		if rec.Code != 200 || !strings.Contains(rec.Header().Get("Cache-Control"), "immutable") {
			t.Errorf("%s: %d %v", l[0], rec.Code, rec.Header())
		}
	}
	for _, attribution := range []string{"Natural Earth", "world-atlas", "ISC", "This product includes IP2Location LITE data available from", "https://lite.ip2location.com", "CC BY-SA 4.0"} {
		if !strings.Contains(page, attribution) {
			t.Errorf("footer lacks %q", attribution)
		}
	}
}

// The map has one path per country, named by the alpha-2 code the API reports, and stays
// small.
func TestMap(t *testing.T) {
	svg := serve(New(), "GET", "/dashboard/world.svg").Body.String()
	ids := regexp.MustCompile(`<path id="([^"]*)"`).FindAllStringSubmatch(svg, -1)
	seen := map[string]bool{}
	for _, id := range ids {
		if !regexp.MustCompile(`^[A-Z]{2}$`).MatchString(id[1]) || seen[id[1]] {
			t.Errorf("path id %q (duplicate: %v)", id[1], seen[id[1]])
		}
		seen[id[1]] = true
	}
	for _, cc := range []string{"DE", "FR", "US", "CN", "RU", "BR", "GB", "XK", "FJ"} {
		if !seen[cc] {
			t.Errorf("no path for %s", cc)
		}
	}
	if len(ids) < 170 || len(svg) > 150<<10 {
		t.Errorf("%d countries in %d bytes", len(ids), len(svg))
	}
	t.Logf("world.svg: %d countries, %d bytes", len(ids), len(svg))
}

// The generator reproduces the embedded map from the TopoJSON kept beside it.
func TestMapIsGenerated(t *testing.T) {
	out := t.TempDir() + "/world.svg"
	cmd := exec.Command("go", "run", "./gen", "-in", "gen/countries-110m.json", "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	want, _ := assets.ReadFile("assets/world.svg")
	if string(got) != string(want) {
		t.Fatal("assets/world.svg is not what gen makes: run go generate ./internal/dashboard")
	}
}

func TestHandler(t *testing.T) {
	h := New()
	for _, c := range []struct {
		target string
		code   int
		ctype  string
	}{
		{"/", 200, "text/html; charset=utf-8"},
		{"/dashboard/app.js", 200, "text/javascript; charset=utf-8"},
		{"/dashboard/app.css", 200, "text/css; charset=utf-8"},
		{"/dashboard/world.svg", 200, "image/svg+xml"},
		{"/dashboard/index.html", 404, "application/json"}, // the page lives at / only
		{"/dashboard/", 404, "application/json"},
		{"/dashboard/gen/main.go", 404, "application/json"},
	} {
		rec := serve(h, "GET", c.target)
		if rec.Code != c.code || rec.Header().Get("Content-Type") != c.ctype || rec.Header().Get("Content-Security-Policy") != CSP {
			t.Errorf("%s: %d %v", c.target, rec.Code, rec.Header())
		}
	}
	rec := serve(h, "HEAD", "/dashboard/app.js")
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: %d, %d bytes, %v", rec.Code, rec.Body.Len(), rec.Header())
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("If-None-Match", `W/"x", `+serve(h, "GET", "/").Header().Get("ETag"))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", rec.Code)
	}
	for _, name := range []string{"", "app.js", "app.css", "world.svg"} {
		t.Logf("asset %q: %d bytes", name, h.Size(name))
	}
}
