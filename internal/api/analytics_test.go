package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// seedAnalytics writes an attack history with tools, payloads, origins in known countries
// and dial-out prefixes through the real store and labeler.
func seedAnalytics(t *testing.T) (*sqlite.Store, *intel.Labeler) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "analytics.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := intel.NewLabeler("")
	st.SetLabeler(l)
	mk := func(i int, ago time.Duration, ip, number, tool string) *event.Event {
		return &event.Event{
			AppName: event.AppName, AppVersion: "test", Timestamp: event.FormatTime(now.Add(-ago)),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "node",
			CollectedMethod: event.Passive, Transport: event.UDP, SourceIP: ip, SourcePort: 5060,
			DestinationIP: "127.0.0.1", DestinationPort: 5060, CalledNumber: number,
			SIPMethod: "INVITE", SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:x SIP/2.0\r\n\r\n", Tool: tool,
		}
	}
	spoofed := mk(3, 3*time.Minute, "130.149.1.1", "900449098790123", "sipvicious")
	spoofed.UASpoofed, spoofed.SIPUserAgent = true, "Cisco-SIPGateway/IOS-12.x"
	sqli := mk(5, 90*time.Second, "131.111.8.46", "1' OR '1'='1", "")
	sqli.Payload = []event.Payload{{Kind: "sqli", Where: "to"}}
	batch := []*event.Event{
		// An old test call to the premium number, two days before the campaign.
		mk(1, 48*time.Hour, "130.149.1.1", "00449098790123", "sipvicious"),
		mk(2, 4*time.Minute, "130.149.1.1", "00449098790123", "sipvicious"),
		spoofed,
		mk(4, 2*time.Minute, "130.149.1.1", "0046812118532", "sipvicious"),
		sqli,
		mk(6, time.Minute, "2001:630::1", "+4915123456789", "sipsak"),
	}
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return st, l
}

// analyticsCases are the analytics requests whose answers the golden files hold.
var analyticsCases = []struct{ golden, path string }{
	{"stats-tools", "/stats/tools"},
	{"stats-countries", "/stats/countries"},
	{"stats-prefixes", "/stats/prefixes"},
	{"stats-numbers", "/stats/numbers?limit=2"},
	{"stats-payloads", "/stats/payloads"},
	{"stats-target-countries", "/stats/target-countries"},
	{"stats-targets", "/stats/targets"},
	{"stats-targets-fresh", "/stats/targets?fresh=24h"},
	{"stats-timeline", "/stats/timeline?step=1m&since=5m"},
	{"stats-timeline-hours", "/stats/timeline?step=1h&since=2026-11-21"},
	{"campaigns", "/campaigns"},
	{"campaigns-since", "/campaigns?since=1h&limit=1"},
	{"number-info", "/numbers/900449098790123"},
	{"number-info-national", "/numbers/+46812118532?match=national"},
	{"stats-timeline-bad-step", "/stats/timeline?step=7m"},
	{"stats-timeline-too-long", "/stats/timeline?step=1m&since=2026-11-01"},
	{"stats-targets-bad-fresh", "/stats/targets?fresh=yesterday"},
	{"campaigns-bad-limit", "/campaigns?limit=100000"},
	{"stats-numbers-bad-limit", "/stats/numbers?limit=10001"},
}

func TestAnalyticsRoutes(t *testing.T) {
	st, l := seedAnalytics(t)
	srv := newAnalyticsServer(t, Config{Store: st, Analytics: st, NumberInfo: l.Analyze})
	for _, tt := range analyticsCases {

		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, tt.golden, dump(t, resp))
	}
}

// Without analytics (a store that keeps none), their routes are unknown; the counted
// dimensions still answer.
func TestAnalyticsOff(t *testing.T) {
	srv := newAnalyticsServer(t, Config{Store: seed(t)})
	for path, want := range map[string]int{"/stats/targets": 404, "/stats/timeline": 404, "/campaigns": 404, "/stats/tools": 200} {
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

func newAnalyticsServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	cfg.Version = "1.2.3"
	cfg.Now = func() time.Time { return now }
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = HTTPServer(Handler(cfg), nil)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// A day back at 1m steps is allowed: 1,440 steps and the one under way.
func TestTimelineDayAtMinutes(t *testing.T) {
	st, l := seedAnalytics(t)
	srv := newAnalyticsServer(t, Config{Store: st, Analytics: st, NumberInfo: l.Analyze})
	resp, err := http.Get(srv.URL + "/stats/timeline?step=1m&since=24h")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Timeline []struct {
			Count string `json:"seen_count"`
		} `json:"timeline"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 || len(doc.Timeline) != 1441 {
		t.Fatalf("status %d, %d steps (%v)", resp.StatusCode, len(doc.Timeline), err)
	}
	var sum int
	for _, b := range doc.Timeline {
		n, _ := strconv.Atoi(b.Count)
		sum += n
	}
	if sum != 5 { // the events of the last day; the one two days old is outside
		t.Errorf("%d events in the last day, want 5", sum)
	}
}
