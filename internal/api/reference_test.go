package api

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/clidoc"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/dialtrap/dialtrap/internal/hits"
)

const (
	referencePath = "../../docs/reference/api.md"
	// Above the marker the reference is written by hand; below it, generated.
	referenceMarker  = "<!-- Generated below from the route table (internal/api) and the API tests' golden answers; do not edit below. Rewrite with: go test ./internal/api -run TestReference -update -->\n"
	examplesPerRoute = 3
	maxExampleLines  = 45
)

type example struct{ golden, method, path string }

// referenceCases are examples of the routes no other golden test shows.
var referenceCases = []example{
	{"feed-plain", "GET", "/feeds/ip-addresses?verified=any"},
	{"feed-nft", "GET", "/feeds/ip-addresses?format=nft&verified=any&ttl=24h&table=feed"},
	{"feed-numbers-json", "GET", "/feeds/numbers?format=json&verified=any&source=all"},
	{"feed-bad-format", "GET", "/feeds/numbers?format=nft"},
	{"metrics-off", "GET", "/metrics"},
	{"hits", "GET", "/hits?limit=2"}, // after the lookups of hitLookups
}

// hitLookups are asked before referenceCases, so that /hits has something to show.
var hitLookups = []string{"/ip-addresses/192.0.2.10", "/numbers/100", "/numbers/8.8.8.8", "/api/ip-addresses/203.0.113.9"}

// TestReference regenerates the route part of docs/reference/api.md: every route of the mux,
// its description, and up to three answers from the golden files the other tests check, so
// neither a route nor an example can drift from the code.
func TestReference(t *testing.T) {
	doc, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := bytes.Cut(doc, []byte(referenceMarker))
	if !ok {
		t.Fatalf("%s lacks its marker line %q", referencePath, referenceMarker)
	}

	// A 401, which the contract cases (a server without a token) cannot show.
	srv := newServer(t, seed(t), "s3cret", false)
	resp, err := http.Get(srv.URL + "/numbers/100")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "unauthorized", dump(t, resp))
	// Answers of routes the contract cases leave out, checked here.
	st := seed(t)
	plain := httptest.NewServer(HTTPServer(Handler(Config{Store: st, Feeds: st.(feed.StreamSource), Version: "1.2.3",
		Now: func() time.Time { return now }, Hits: hits.New(hits.Config{Now: func() time.Time { return now }})}), nil).Handler)
	t.Cleanup(plain.Close)
	for _, p := range hitLookups {
		resp, err := http.Get(plain.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, c := range referenceCases {
		resp, err := http.Get(plain.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, c.golden, dump(t, resp))
	}

	var examples []example
	for _, c := range contractCases {
		examples = append(examples, example{c.golden, c.method, c.path})
	}
	for _, c := range analyticsCases {
		examples = append(examples, example{c.golden, "GET", c.path})
	}
	examples = append(examples, referenceCases...)
	examples = append(examples, example{"unauthorized", "GET", "/numbers/100 (with --api-token set, no Authorization header)"})

	// The mux says which route answers each example. The golden answers come from servers
	// without the dashboard, so / is an error there: it is shown with the errors, saying so.
	h := Handler(Config{Store: seed(t)}).(*handler)
	byRoute := map[string][]example{}
	for _, e := range examples {
		path, _, _ := strings.Cut(e.path, " ")
		req, err := http.NewRequest(e.method, "http://x"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, pattern := h.mux.Handler(req)
		if e.golden == "root" {
			e.path += " (with --dashboard=false)"
		}
		byRoute[pattern] = append(byRoute[pattern], e)
	}
	// A route's examples: the contract's first, then the analytics tests' (number_info),
	// up to examplesPerRoute, so each kind of answer is shown.
	for pattern, ex := range byRoute {
		var contract, analytics []example
		for _, e := range ex {
			if slices.ContainsFunc(analyticsCases, func(c struct{ golden, path string }) bool { return c.golden == e.golden }) {
				analytics = append(analytics, e)
			} else {
				contract = append(contract, e)
			}
		}
		if len(analytics) > 0 && len(contract) >= examplesPerRoute {
			contract = contract[:examplesPerRoute-1]
		}
		byRoute[pattern] = append(contract, analytics...)
	}

	var b bytes.Buffer
	b.Write(head)
	b.WriteString(referenceMarker)
	b.WriteString("\n## Routes\n\n| route | answers |\n|---|---|\n")
	routes := Routes()
	for _, r := range routes {
		first, _, _ := strings.Cut(r.Doc, ". ")
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", r.Pattern, clidoc.Anchor(heading(r.Pattern)), strings.ReplaceAll(strings.TrimSuffix(first, "."), "|", `\|`)+".")
	}
	b.WriteString("\n")
	for _, r := range routes {
		fmt.Fprintf(&b, "### %s\n\n%s\n\n", heading(r.Pattern), r.Doc)
		ex := byRoute[r.Pattern]
		if len(ex) > examplesPerRoute {
			ex = ex[:examplesPerRoute]
		}
		for _, e := range ex {
			writeExample(t, &b, e)
		}
	}
	b.WriteString("## Errors\n\nWhat any route may answer to a request it cannot serve.\n\n")
	for _, e := range byRoute["/"] {
		writeExample(t, &b, e)
	}
	for _, e := range examples {
		if strings.HasPrefix(e.golden, "bad-") || e.golden == "unauthorized" || strings.HasPrefix(e.golden, "method-") {
			writeExample(t, &b, e)
		}
	}
	golden.Check(t, referencePath, b.Bytes())
}

func writeExample(t *testing.T, b *bytes.Buffer, e example) {
	t.Helper()
	ans, err := os.ReadFile(filepath.Join("testdata", e.golden+".golden"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(ans), "\n"), "\n")
	if len(lines) > maxExampleLines {
		lines = append(lines[:maxExampleLines-1], fmt.Sprintf("... (%d more lines)", len(lines)-maxExampleLines+1))
	}
	fmt.Fprintf(b, "`%s %s`\n\n```http\n%s\n```\n\n", e.method, e.path, strings.Join(lines, "\n"))
}

// heading is a route's title: the pattern, with the page's root said in words.
func heading(pattern string) string {
	if pattern == "/{$}" {
		return "/ (the dashboard page)"
	}
	return pattern
}

// Every route the mux serves is in Routes, with a description, and the reference's hand-written
// part names every header each answer carries.
func TestRoutesDocumented(t *testing.T) {
	h := Handler(Config{Store: seed(t), Dashboard: http.NotFoundHandler()}).(*handler)
	for _, r := range Routes() {
		if len(r.Doc) < 20 {
			t.Errorf("route %s has no description", r.Pattern)
		}
		path := strings.NewReplacer("{ip}", "192.0.2.1", "{n}", "100", "{$}", "").Replace(r.Pattern)
		req, _ := http.NewRequest("GET", "http://x"+path, nil)
		if _, pattern := h.mux.Handler(req); pattern != r.Pattern {
			t.Errorf("%s reaches route %q: the mux and Routes disagree", path, pattern)
		}
	}
	doc, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := bytes.Cut(doc, []byte(referenceMarker))
	health, err := os.ReadFile("testdata/health.golden")
	if err != nil {
		t.Fatal(err)
	}
	hdrs, _, _ := strings.Cut(string(health), "\n\n")
	for _, line := range strings.Split(hdrs, "\n")[1:] {
		name, _, _ := strings.Cut(line, ":")
		if name != "Content-Length" && !bytes.Contains(head, []byte(name)) {
			t.Errorf("the reference's introduction does not mention the %s header every answer carries", name)
		}
	}
}
