package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// seed writes a small, fixed attack history through the real store.
func seed(t testing.TB) Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "api.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mk := func(i int, at string, ip, number, method, agent, transport string) *event.Event {
		return &event.Event{
			AppName: event.AppName, AppVersion: "test", Timestamp: at,
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "node",
			CollectedMethod: event.Passive, Transport: transport, SourceIP: ip, SourcePort: 5060,
			DestinationIP: "127.0.0.1", DestinationPort: 5060, CalledNumber: number,
			SIPMethod: method, SIPUserAgent: agent, SIPMessage: method + " sip:x SIP/2.0\r\n\r\n",
		}
	}
	batch := []*event.Event{
		mk(1, "2026-11-22 09:15:00.000000001", "192.0.2.10", "+46812345678", "OPTIONS", "friendly-scanner", event.UDP),
		mk(2, "2026-11-23 10:00:00.500000000", "192.0.2.10", "+46812345678", "INVITE", "friendly-scanner", event.UDP),
		mk(3, "2026-11-23 10:30:00.000000000", "2001:db8::5", "0046812345678", "INVITE", "sipsak 0.9.8", event.TCP),
		mk(4, "2026-11-23 11:00:00.000000000", "198.51.100.7", "100", "REGISTER", "<script>alert(1)</script>", event.TLS),
		mk(5, "2026-11-23 11:30:00.000000000", "198.51.100.7", `100' OR "1"="1`, "INVITE", event.NotFound, event.UDP),
		// SIPp's default scenario dials the user "service".
		mk(9, "2026-11-23 08:00:00.000000000", "192.0.2.20", "service", "INVITE", "sipp", event.UDP),
		// User parts are kept as sent: path segments and dots too.
		mk(10, "2026-11-23 07:00:00.000000000", "192.0.2.20", "../../etc/passwd", "INVITE", "sipp", event.UDP),
		mk(11, "2026-11-23 07:00:00.000000001", "192.0.2.20", "..", "INVITE", "sipp", event.UDP),
	}
	// Reports from peers: one address two peers saw (one of them trusted), and a peer's
	// sighting of an address this node saw itself.
	fromPeer := func(e *event.Event, peer string, trusted bool) *event.Event {
		e.FromPeer, e.Peer, e.Trusted, e.Sealed = true, peer, trusted, []byte("envelope")
		return e
	}
	batch = append(batch,
		fromPeer(mk(6, "2026-11-23 11:40:00.000000000", "203.0.113.9", "0099912345", "INVITE", "sipcli/v1.8", event.UDP), "12D3KooWPeerA", true),
		fromPeer(mk(7, "2026-11-23 11:41:00.000000000", "203.0.113.9", "0099912345", "INVITE", "sipcli/v1.8", event.UDP), "12D3KooWPeerB", false),
		fromPeer(mk(8, "2026-11-23 09:00:00.000000000", "192.0.2.10", event.NotFound, "OPTIONS", "friendly-scanner", event.UDP), "12D3KooWPeerB", false),
	)
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return st
}

func newServer(t testing.TB, st Store, token string, national bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = HTTPServer(Handler(Config{Store: st, Version: "1.2.3", Token: token, National: national,
		Now: func() time.Time { return now }}), nil)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// dump renders a response for a golden file: status, headers without Date, body.
func dump(t *testing.T, resp *http.Response) string {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	var names []string
	for k := range resp.Header {
		if k != "Date" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	if len(resp.TransferEncoding) > 0 {
		fmt.Fprintf(&b, "Transfer-Encoding: %s\n", strings.Join(resp.TransferEncoding, ", "))
	}
	b.WriteString("\n")
	b.Write(body)
	return b.String()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, filepath.Join("testdata", name+".golden"), []byte(got))
}

// contractCases are the requests whose answers the golden files hold; the reference
// (docs/reference/api.md) shows them as examples.
var contractCases = []struct{ golden, method, path string }{
	{"health", "GET", "/health-check"},
	{"ip-list", "GET", "/ip-addresses"},
	{"ip-list-page", "GET", "/ip-addresses?limit=1&offset=1"},
	{"ip-list-since", "GET", "/ip-addresses?since=2026-11-23T10:15:00Z"},
	{"ip-list-empty", "GET", "/ip-addresses?since=10m"},
	{"ip-found", "GET", "/ip-addresses/192.0.2.10"},
	{"ip-from-peers", "GET", "/ip-addresses/203.0.113.9"},
	{"peers-off", "GET", "/peers"},
	{"bgp-off", "GET", "/bgp"},
	{"policy-off", "GET", "/policy"},
	{"ip6-found", "GET", "/ip-addresses/2001:DB8:0::5"},
	{"ip-mapped", "GET", "/ip-addresses/::ffff:198.51.100.7"},
	{"ip-missing", "GET", "/ip-addresses/8.8.8.8"},
	{"ip-malformed", "GET", "/ip-addresses/192.0.2.300"},
	{"ip-zone", "GET", "/ip-addresses/fe80::1%25eth0"},
	{"ipset", "GET", "/ipset"},
	{"ipset-alias", "GET", "/ip-addresses/ipset"},
	{"number-list", "GET", "/numbers"},
	{"number-found", "GET", "/numbers/100"},
	{"number-plus", "GET", "/numbers/+46812345678"},
	{"number-plus-encoded", "GET", "/numbers/%2B46812345678"},
	{"number-exact-miss", "GET", "/numbers/46812345678"},
	{"number-national", "GET", "/numbers/901146812345678?match=national"},
	{"number-national-miss", "GET", "/numbers/+44812345678?match=national"},
	{"number-malformed", "GET", "/numbers/%FF%FE"},
	{"number-unknown-name", "GET", "/numbers/12a4"},
	{"number-sqli", "GET", "/numbers/100'%20OR%201=1"},
	{"number-sqli-stored", "GET", "/numbers/100'%20OR%20%221%22=%221"},
	{"number-name-national", "GET", "/numbers/service?match=national"},
	{"ip-list-limit-0", "GET", "/ip-addresses?limit=0"},
	{"number-list-limit-0", "GET", "/numbers?limit=0&since=2026-11-23"},
	{"ipset-limit-0", "GET", "/ipset?limit=0"},
	{"stats-limit-0", "GET", "/stats?limit=0"},
	{"user-agents-limit-0", "GET", "/user-agents?limit=0"},
	{"number-bad-match", "GET", "/numbers/100?match=fuzzy"},
	{"hosted-number", "GET", "/api/phone-numbers/100"},
	{"hosted-number-miss", "GET", "/api/phone-numbers/999"},
	{"hosted-ip", "GET", "/api/ip-addresses/2001:db8::5"},
	{"hosted-ip-miss", "GET", "/api/ip-addresses/203.0.113.1"},
	{"hosted-ip-malformed", "GET", "/api/ip-addresses/nope"},
	{"not-found", "GET", "/no/such/route"},
	{"root", "GET", "/"},
	{"trailing-slash", "GET", "/numbers/"},
	{"dot-segments", "GET", "/numbers/../ip-addresses"},
	{"method-post", "POST", "/numbers/100"},
	{"method-delete", "DELETE", "/ip-addresses"},
	{"head-lookup", "HEAD", "/numbers/100"},
	{"head-list", "HEAD", "/numbers"},
	{"bad-limit", "GET", "/numbers?limit=-1"},
	{"bad-offset", "GET", "/ip-addresses?offset=x"},
	{"bad-since", "GET", "/numbers?since=yesterday"},
	{"stats", "GET", "/stats"},
	{"stats-since", "GET", "/stats?since=2026-11-23%2010:45"},
	{"sip-methods", "GET", "/sip-methods"},
	{"user-agents", "GET", "/user-agents?limit=2"},
	{"user-agents-since", "GET", "/user-agents?since=24h"},
}

func TestContract(t *testing.T) {
	srv := newServer(t, seed(t), "", false)
	tests := contractCases
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tt.golden, dump(t, resp))
		})
	}
}

// National matching as the configured default, and ?match=exact overriding it.
func TestNationalDefault(t *testing.T) {
	srv := newServer(t, seed(t), "", true)
	for path, want := range map[string]int{
		"/numbers/46812345678":             200,
		"/numbers/46812345678?match=exact": 404,
		"/api/phone-numbers/0046812345678": 200,
		"/api/phone-numbers/+33812345678":  404,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestToken(t *testing.T) {
	srv := newServer(t, seed(t), "s3cret-token", false)
	tests := []struct {
		path, auth string
		want       int
	}{
		{"/health-check", "", 200},
		{"/numbers/100", "", 401},
		{"/numbers/100", "Bearer s3cret-token", 200},
		{"/numbers/100", "Bearer s3cret-tokem", 401},
		{"/numbers/100", "bearer s3cret-token", 200},
		{"/numbers/100", "BEARER  s3cret-token", 200},
		{"/numbers/100", "Bearers3cret-token", 401},
		{"/numbers/100", "Bearer s3cret", 401},
		{"/numbers/100", "Basic czNjcmV0LXRva2Vu", 401},
		{"/numbers/100", "s3cret-token", 401},
		{"/no/such/route", "", 401}, // says nothing about routes to strangers
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", srv.URL+tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s with %q: %d, want %d", tt.path, tt.auth, resp.StatusCode, tt.want)
		}
		if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
}

// The streamed lists must be byte for byte what encoding a whole document gives, for any key
// the store may hold (quotes, control characters, HTML, invalid UTF-8 made valid).
func TestStreamedListMatchesWholeDocument(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	numbers := []string{"100", `a"b\c`, "tab\there", "nl\nx", "<sip:x@y>&", "\u2028\x01", "ünï", "\x7f"}
	var batch []*event.Event
	for i, n := range numbers {
		batch = append(batch, &event.Event{AppName: event.AppName, Timestamp: fmt.Sprintf("2026-11-23 10:00:%02d.000000000", i),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Transport: event.UDP, SourceIP: "192.0.2.1", CalledNumber: n})
	}
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, st, "", false)
	resp, err := http.Get(srv.URL + "/numbers")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var entries []jsonObject
	for i := len(numbers) - 1; i >= 0; i-- {
		entries = append(entries, jsonObject{{"called_number", numbers[i]},
			{"seen_last", batch[i].Timestamp}, {"seen_count", "1"},
			{"seen_locally", true}, {"seen_by_peers", 0}, {"seen_by_trusted_peers", 0}, {"verified_count", 0}})
	}
	want, err := marshal(jsonObject{{"called_numbers_total", len(numbers)}, {"called_numbers", entries}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("streamed list differs from the whole document:\n got %s\nwant %s", got, want)
	}
}

// Raw requests that a client library would never send.
func TestMalformedRawRequests(t *testing.T) {
	srv := newServer(t, seed(t), "", false)
	addr := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		name, req  string
		wantStatus string
	}{
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", "400"},
		{"no version", "GET /health-check\r\n\r\n", "400"},
		{"bad escape", "GET /numbers/%zz HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"huge header", "GET /numbers/100 HTTP/1.1\r\nHost: x\r\nX-Junk: " + strings.Repeat("a", 2*MaxHeaderBytes) + "\r\n\r\n", "431"},
		{"nul in path", "GET /numbers/1\x0000 HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"long number", "GET /numbers/" + strings.Repeat("9", 8000) + " HTTP/1.1\r\nHost: x\r\n\r\n", "404"},
		{"absolute URI", "GET http://evil.example/numbers/100 HTTP/1.1\r\nHost: x\r\n\r\n", "200"},
		{"unicode digits", "GET /numbers/%D9%A1%D9%A2 HTTP/1.1\r\nHost: x\r\n\r\n", "404"},
		{"not UTF-8", "GET /numbers/%FF%FE HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"sqli query", "GET /numbers?limit=1;DROP%20TABLE%20events HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"body on GET", "GET /numbers/100 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tt.req)
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Fatalf("no status line: %v", err)
			}
			if f := strings.Fields(line); len(f) < 2 || f[1] != tt.wantStatus {
				t.Errorf("status line %q, want %s", line, tt.wantStatus)
			}
		})
	}
	// The store is intact and the server still answers.
	resp, err := http.Get(srv.URL + "/numbers/100")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after malformed requests: %v %v", resp, err)
	}
	resp.Body.Close()
}

// Whatever /numbers lists can be asked for by /numbers/{n} and /api/phone-numbers/{n}: digits,
// names such as SIPp's "service", injection payloads with quotes and spaces.
func TestEveryListedNumberCanBeLookedUp(t *testing.T) {
	srv := newServer(t, seed(t), "", true)
	var list struct {
		Numbers []struct {
			Number string `json:"called_number"`
		} `json:"called_numbers"`
	}
	getJSON(t, srv.URL+"/numbers", &list)
	if len(list.Numbers) < 5 {
		t.Fatalf("only %d numbers listed", len(list.Numbers))
	}
	for _, n := range list.Numbers {
		for _, route := range []string{"/numbers/", "/api/phone-numbers/"} {
			for _, match := range []string{"exact", "national"} {
				u := srv.URL + route + escapeNumber(n.Number) + "?match=" + match
				resp, err := http.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s: %d %s, want 200", u, resp.StatusCode, body)
				}
			}
		}
	}
}

// escapeNumber escapes a number as a path segment, dots of a "." or ".." segment included
// (url.PathEscape leaves them, and a dot segment is no clean path).
func escapeNumber(n string) string {
	if n == "." || n == ".." {
		return strings.Repeat("%2E", len(n))
	}
	return url.PathEscape(n)
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", u, err)
	}
}

// /bgp and /policy show their part's status when it runs.
func TestBGPAndPolicyRoutes(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{Store: seed(t), Version: "1",
		BGP:    func(ctx context.Context) any { return map[string]any{"announced": 3} },
		Policy: func() any { return map[string]any{"decisions": map[string]int{"allow": 2}} }}))
	defer srv.Close()
	for path, want := range map[string]string{
		"/bgp":    "{\n  \"announced\": 3\n}",
		"/policy": "{\n  \"decisions\": {\n    \"allow\": 2\n  }\n}",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("%s: %d %s, want 200 %s", path, resp.StatusCode, body, want)
		}
	}
}

// /peers shows the peer-to-peer report as JSON, behind the token like every data route.
func TestPeersRoute(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{Store: seed(t), Version: "1", Token: "s3cret",
		Peers: func() any { return map[string]any{"peer_id": "12D3KooWSelf", "peers_total": 0} }}))
	defer srv.Close()
	for _, tt := range []struct {
		auth   string
		status int
		body   string
	}{
		{"", http.StatusUnauthorized, ""},
		{"Bearer s3cret", http.StatusOK, "{\n  \"peer_id\": \"12D3KooWSelf\",\n  \"peers_total\": 0\n}"},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/peers", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || tt.body != "" && string(body) != tt.body {
			t.Errorf("auth %q: %d %s, want %d %s", tt.auth, resp.StatusCode, body, tt.status, tt.body)
		}
	}
}

// The server's lifecycle: Close before Start is a no-op, Start binds port 0 and serves,
// Close waits for a slow list reader to be cut off, and a second server on the same address
// fails with a hint.
func TestServerLifecycle(t *testing.T) {
	st := seed(t)
	s := New(Config{Addr: "127.0.0.1:0", Store: st, Version: "1"})
	if err := s.Close(context.Background()); err != nil || s.Addr() != nil {
		t.Fatalf("Close before Start: %v, addr %v", err, s.Addr())
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr().String() + "/numbers/service")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("lookup: %v %v", resp, err)
	}
	resp.Body.Close()
	other := New(Config{Addr: s.Addr().String(), Store: st})
	if err := other.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "--api-addr") {
		t.Errorf("second server on %s: %v, want an error naming --api-addr", s.Addr(), err)
	}
	other.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/health-check"); err == nil {
		t.Error("still serving after Close")
	}
}

// /stats says how many UDP datagrams the kernel dropped before capture read them.
func TestStatsReportKernelDrops(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{Store: seed(t), Version: "1", KernelDrops: func() uint64 { return 42 }}))
	defer srv.Close()
	var doc map[string]any
	getJSON(t, srv.URL+"/stats", &doc)
	if doc["udp_receive_drops"] != 42.0 {
		t.Errorf("/stats: %v, want udp_receive_drops 42", doc)
	}
}

// busyStore answers lists as a store whose long-list connections are all taken.
type busyStore struct{ Store }

func (busyStore) Each(context.Context, store.List, store.ListOptions, func(store.Aggregate) error) error {
	return fmt.Errorf("list: %w", store.ErrBusy)
}

// When the store is busy with other long lists, a list is answered 503 with Retry-After,
// not cut off.
func TestBusyListIs503(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{Store: busyStore{seed(t)}, Version: "1"}))
	defer srv.Close()
	for _, path := range []string{"/numbers", "/ip-addresses", "/ipset"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "try again") {
			t.Errorf("%s: %d %v %s", path, resp.StatusCode, resp.Header, body)
		}
	}
}

// A national lookup's verified_count is the sum over the numbers it matched, as its count is.
func TestNationalVerifiedCount(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var batch []*event.Event
	for i, n := range []string{"+46812345678", "0046812345678", "0046812345678"} {
		batch = append(batch, &event.Event{AppName: event.AppName, AppVersion: "test", Timestamp: "2026-11-23 10:00:00.000000000",
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1), NodeID: "node", CollectedMethod: event.Responsive,
			Transport: event.TCP, SourceIP: "203.0.113.5", SourcePort: 5060, DestinationIP: "127.0.0.1", DestinationPort: 5060,
			CalledNumber: n, SIPMethod: "INVITE", SIPUserAgent: "x", SIPMessage: "INVITE", SourceVerified: true})
	}
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, st, "", false)
	var got struct {
		Count    string `json:"seen_count"`
		Verified int64  `json:"verified_count"`
	}
	getJSON(t, srv.URL+"/numbers/46812345678?match=national", &got)
	if got.Count != "3" || got.Verified != 3 {
		t.Fatalf("national lookup: seen_count %s verified_count %d, want 3 and 3", got.Count, got.Verified)
	}
}
