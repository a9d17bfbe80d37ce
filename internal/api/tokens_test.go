package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/hits"
)

func TestParseToken(t *testing.T) {
	for _, c := range []struct {
		in, name string
		lookup   bool
		err      string
	}{
		{"s3cret", "default", false, ""},
		{" s3cret ", "default", false, ""},
		{"pbx1:s3cret-pbx", "pbx1", false, ""},
		{"pbx1:s3cret-pbx:lookup", "pbx1", true, ""},
		{"fw.a-1_b:xxxxxxxx", "fw.a-1_b", false, ""},
		{"", "", false, "empty"},
		{"pbx1:", "", false, "shorter than 8"},
		{"pbx1::lookup", "", false, "shorter than 8"},
		{"k7Hq2mZ9vXb4Lr8T:1", "", false, "shorter than 8"}, // an old secret with a ':' is not split silently
		{"pbx1:s3cret-pbx:admin", "", false, "not the scope"},
		{"Tr0ub4dor&3:xxxxxxxx", "", false, "not a name"}, // and never quoted
		{"pbx1:a:b:c", "", false, "not the scope"},
		{"bad name:s", "", false, "name"},
		{":s", "", false, "name"},
	} {
		tk, err := ParseToken(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseToken(%q) = %v, want error with %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || tk.Name != c.name || tk.LookupOnly != c.lookup {
			t.Errorf("ParseToken(%q) = %+v, %v; want %s lookup=%v", c.in, tk, err, c.name, c.lookup)
		}
	}
	if _, err := ParseTokens([]string{"a:x", "a:y"}); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestReadTokenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte("# PBXs\npbx1:one-one-one:lookup\n\n  billing:two-two-two  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTokenFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable file: %v, want a refusal", err)
	}
	os.Chmod(p, 0o600)
	ts, err := ReadTokenFile(p)
	if err != nil || len(ts) != 2 || ts[0].Name != "pbx1" || !ts[0].LookupOnly || ts[1].Name != "billing" {
		t.Fatalf("ReadTokenFile = %+v, %v", ts, err)
	}
}

func getTok(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestNamedTokensAndHits(t *testing.T) {
	ts, err := ParseTokens([]string{"pbx1:one-one-one:lookup", "billing:two-two-two", "old:three-three"})
	if err != nil {
		t.Fatal(err)
	}
	tokens := NewTokens(ts)
	rec := hits.New(hits.Config{Now: func() time.Time { return now }})
	srv := httptest.NewServer(Handler(Config{Store: seed(t), Version: "1.2.3", Tokens: tokens, Hits: rec,
		Now: func() time.Time { return now }}))
	t.Cleanup(srv.Close)

	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/numbers/100", "one-one-one", 200},
		{"/ip-addresses/192.0.2.10", "one-one-one", 200},
		{"/api/phone-numbers/100", "one-one-one", 200},
		{"/api/ip-addresses/192.0.2.10", "one-one-one", 200},
		{"/health-check", "", 200},
		{"/ip-addresses", "one-one-one", 403},
		{"/hits", "one-one-one", 403},
		{"/stats", "one-one-one", 403},
		{"/numbers/100", "two-two-two", 200},
		{"/ip-addresses", "two-two-two", 200},
		{"/numbers/100", "nope", 401},
		{"/numbers/100", "", 401},
	} {
		if got, body := getTok(t, srv.URL+c.path, c.token); got != c.want {
			t.Errorf("GET %s with %q: %d %s, want %d", c.path, c.token, got, body, c.want)
		}
	}
	// Revoking one token leaves the others.
	tokens.Set(ts[:2])
	if got, _ := getTok(t, srv.URL+"/numbers/100", "three-three"); got != 401 {
		t.Errorf("revoked token: %d, want 401", got)
	}
	if got, _ := getTok(t, srv.URL+"/numbers/100", "two-two-two"); got != 200 {
		t.Errorf("kept token after a revocation: %d, want 200", got)
	}

	// Six hits so far: four by pbx1, two by billing; newest first.
	code, body := getTok(t, srv.URL+"/hits?limit=2&offset=1", "two-two-two")
	if code != 200 {
		t.Fatalf("/hits: %d %s", code, body)
	}
	var page struct {
		Total int               `json:"hits_total"`
		Hits  []json.RawMessage `json:"hits"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	if page.Total != 6 || len(page.Hits) != 2 {
		t.Fatalf("/hits?limit=2&offset=1 = %s", body)
	}
	var h0, h1 map[string]any
	json.Unmarshal(page.Hits[0], &h0)
	json.Unmarshal(page.Hits[1], &h1)
	if h0["token"] != "billing" || h0["value"] != "100" || h0["seen_count"] != "1" || h0["client"] != "127.0.0.1" || h0["source"] != "api" {
		t.Errorf("second newest hit = %v", h0)
	}
	if h1["token"] != "pbx1" || h1["kind"] != "ip" || h1["value"] != "192.0.2.10" {
		t.Errorf("third newest hit = %v", h1)
	}
	keys := []string{"time", "kind", "value", "matched", "seen_count", "seen_locally", "seen_by_peers", "client", "token", "source"}
	if len(h0) != len(keys) {
		t.Errorf("hit keys %v, want exactly %v", h0, keys)
	}
	if code, body := getTok(t, srv.URL+"/hits?limit=x", "two-two-two"); code != 400 {
		t.Errorf("/hits?limit=x: %d %s", code, body)
	}
}

// A secret with a ':' set before tokens had names keeps working for clients that send it
// whole; a lookup-only token answers only to its secret.
func TestTokenWithColonStillMatchesWhole(t *testing.T) {
	ts, err := ParseTokens([]string{"pbx:s3cret99", "ro:x9x9x9x9:lookup"})
	if err != nil {
		t.Fatal(err)
	}
	toks := NewTokens(ts)
	for got, want := range map[string]string{"pbx:s3cret99": "pbx", "s3cret99": "pbx", "x9x9x9x9": "ro", "ro:x9x9x9x9:lookup": "", "ro:x9x9x9x9": "", "pbx": ""} {
		tk, ok := toks.match(got)
		if (want != "") != ok || tk.Name != want {
			t.Errorf("match(%q) = %q %v, want %q", got, tk.Name, ok, want)
		}
	}
}
