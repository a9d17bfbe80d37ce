package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// get asks the node's API for path with token ("" for none).
func get(t *testing.T, n *Node, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+n.Addrs().API+path, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	return resp.StatusCode, string(b)
}

// scrape reads /metrics over HTTP as Prometheus does and parses the text format.
func scrape(t *testing.T, n *Node, token string) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := get(t, n, "/metrics", token)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// metric returns the sum of name's series that have these labels (pairs; a histogram's
// sample count), or -1 when there is none.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	total, found := 0.0, false
next:
	for _, m := range fams[name].GetMetric() {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		found = true
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	if !found {
		return -1
	}
	return total
}

// sum adds up every series of a counter.
func sum(fams map[string]*dto.MetricFamily, name string) float64 {
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	return total
}

// Real SIP reaches a node with --metrics; a scrape over HTTP, behind the API token, counts
// each probe by transport, method and tool, shows the store's writes and queues, and times
// API requests by route pattern.
func TestMetricsCountRealProbes(t *testing.T) {
	const token = "metrics-s3cret"
	n, logs := startNode(t, load(t, "-a", "-r", "--metrics", "--api-token", token))
	if status, _ := get(t, n, "/metrics", ""); status != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d, want 401", status)
	}
	if status, _ := get(t, n, "/metrics", "wrong"); status != http.StatusUnauthorized {
		t.Errorf("/metrics with a wrong token: %d, want 401", status)
	}
	if status, _ := get(t, n, "/health-check", ""); status != http.StatusOK {
		t.Errorf("/health-check without the token: %d, want 200 (it stays open)", status)
	}
	before := scrape(t, n, token)
	if got := sum(before, "dialtrap_sip_probes_total"); got != 0 {
		t.Fatalf("%v probes before any was sent", got)
	}
	if metric(before, "dialtrap_build_info", "version", "test") != 1 {
		t.Error("dialtrap_build_info{version=\"test\"} missing")
	}
	for _, name := range []string{"dialtrap_sip_udp_kernel_drops_total", "dialtrap_sip_replies_over_budget_total", "go_goroutines", "process_resident_memory_bytes"} {
		if metric(before, name) < 0 {
			t.Errorf("%s missing", name)
		}
	}
	if strings.Contains(logs.String(), "--metrics") {
		t.Errorf("--metrics is still called not built:\n%s", logs)
	}

	// A scanner's datagram, with an attacker's method on another one.
	probe(t, n.Addrs().SIPUDP, "127.0.0.60", "100")
	sendUDP(t, n.Addrs().SIPUDP, "XYZ'-- sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK1\r\n\r\n")
	want := map[[3]string]float64{
		{"UDP", "OPTIONS", "sipvicious"}: 1,
		{"UDP", "other", "unknown"}:      1,
	}
	if _, err := exec.LookPath("sipsak"); err != nil {
		t.Log("sipsak is not installed: only raw datagrams are sent (make test installs it)")
	} else {
		a := n.Addrs()
		for _, c := range [][]string{
			{"-s", "sip:201@" + a.SIPUDP},
			{"--transport=tcp", "-s", "sip:202@" + a.SIPTCP},
			{"--transport=tls", "--tls-ignore-cert-failure", "-s", "sip:203@" + a.SIPTLS},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := exec.CommandContext(ctx, "sipsak", c...).CombinedOutput()
			cancel()
			if err != nil { // sipsak exits 0 only on the 200 OK of responsive mode
				t.Fatalf("sipsak %v: %v\n%s", c, err, out)
			}
		}
		want[[3]string{"UDP", "OPTIONS", "sipsak"}] = 1
		want[[3]string{"TCP", "OPTIONS", "sipsak"}] = 1
		want[[3]string{"TLS", "OPTIONS", "sipsak"}] = 1
	}
	total := 0.0
	for _, v := range want {
		total += v
	}
	var fams map[string]*dto.MetricFamily
	testutil.Eventually(t, "the store writes every probe", 10*time.Second, func() bool {
		fams = scrape(t, n, token)
		return metric(fams, "dialtrap_sink_events_delivered_total", "sink", "sqlite") == total
	})
	for k, v := range want {
		if got := metric(fams, "dialtrap_sip_probes_total", "transport", k[0], "method", k[1], "tool", k[2]); got != v {
			t.Errorf("probes%v = %v, want %v", k, got, v)
		}
	}
	if got := sum(fams, "dialtrap_sip_probes_total"); got != total {
		t.Errorf("%v probes in all, want %v", got, total)
	}
	if metric(fams, "dialtrap_store_write_duration_seconds") < 1 {
		t.Error("no store write timed")
	}
	if got := metric(fams, "dialtrap_sink_queue_events", "sink", "sqlite"); got != 0 {
		t.Errorf("store queue holds %v events once written", got)
	}
	if got := metric(fams, "dialtrap_sink_write_errors_total", "sink", "sqlite"); got != 0 {
		t.Errorf("%v store write errors", got)
	}

	// API latency by route pattern, never by raw path.
	if status, _ := get(t, n, "/numbers/201", token); status != http.StatusOK && status != http.StatusNotFound {
		t.Fatalf("/numbers/201: %d", status)
	}
	get(t, n, "/numbers/0046812118532", token)
	// A request is observed when its handler returns, which may be just after the client
	// has read the answer.
	testutil.Eventually(t, "both lookups observed under /numbers/{n}", 5*time.Second, func() bool {
		fams = scrape(t, n, token)
		return metric(fams, "dialtrap_api_request_duration_seconds", "route", "/numbers/{n}") == 2
	})
	if metric(fams, "dialtrap_api_request_duration_seconds", "route", "/metrics", "status_class", "2xx") < 1 {
		t.Error("scrapes of /metrics are not observed")
	}
	if metric(fams, "dialtrap_api_request_duration_seconds", "route", "/metrics", "status_class", "4xx") != 2 {
		t.Error("the two refused scrapes are not observed as 4xx on /metrics")
	}
	for _, m := range fams["dialtrap_api_request_duration_seconds"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "route" && strings.ContainsAny(l.GetValue(), "0123456789") {
				t.Errorf("raw path %q as a route label", l.GetValue())
			}
		}
	}
}

func sendUDP(t *testing.T, to, msg string) {
	t.Helper()
	c, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// Without --metrics, /metrics is an unknown route; --metrics without -a says it serves nothing.
func TestMetricsOff(t *testing.T) {
	n, _ := startNode(t, load(t, "-a"))
	status, body := get(t, n, "/metrics", "")
	if status != http.StatusNotFound || !strings.Contains(body, "could not be found") {
		t.Errorf("/metrics without --metrics: %d %s, want 404", status, body)
	}
	cfg := load(t, "--metrics")
	if !strings.Contains(fmt.Sprint(cfg.Notices), "--metrics is set but -a") {
		t.Errorf("no notice for --metrics without -a: %q", cfg.Notices)
	}
}

// Events learned from peers are no probes of this node: they show as p2p receptions and
// store writes, and dialtrap_sip_probes_total stays 0.
func TestPeerEventsAreNotProbes(t *testing.T) {
	origin, _ := startNode(t, load(t, "-p", "-a", "--never-block-defaults=false"))
	listener, _ := startNode(t, load(t, "-p", "-a", "--metrics", "-b", origin.Addrs().P2P[0], "--never-block-defaults=false"))
	testutil.Eventually(t, "the listener joins the origin's topic", 15*time.Second, func() bool {
		return listener.peer.Report().TopicPeers() > 0 && origin.peer.Report().TopicPeers() > 0
	})
	time.Sleep(time.Second) // a publish in the mesh's first moments can be lost
	probeTCP(t, origin.Addrs().SIPTCP, "127.0.0.70", "0046812118532")
	testutil.Eventually(t, "the listener stores the origin's event", 15*time.Second, func() bool { return servesIP(t, listener, "127.0.0.70") })
	fams := scrape(t, listener, "")
	if got := sum(fams, "dialtrap_sip_probes_total"); got != 0 {
		t.Errorf("a peer's event counted as %v probes of this node", got)
	}
	if got := metric(fams, "dialtrap_p2p_events_received_total"); got < 1 {
		t.Errorf("p2p events received %v, want at least 1", got)
	}
	if got := metric(fams, "dialtrap_p2p_peers"); got < 1 {
		t.Errorf("%v peers connected, want at least 1", got)
	}
	if got := metric(fams, "dialtrap_p2p_events_rejected_total", "reason", "signature"); got != 0 {
		t.Errorf("signature rejections %v, want a 0 series", got)
	}
	if got := metric(fams, "dialtrap_sink_events_delivered_total", "sink", "sqlite"); got < 1 {
		t.Errorf("the store wrote %v events, want the peer's", got)
	}
}
