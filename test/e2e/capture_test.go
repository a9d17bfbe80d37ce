package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// want is what one recorded probe must hold; empty fields are not checked.
type want struct {
	transport, method, number, agent, srcIP, dstIP string
	srcPort                                        int
	tool                                           string // named from the message's shape
}

// checkEvent asserts the event field by field against the node and the probe.
func checkEvent(t *testing.T, n *node, e *event.Event, w want, collected string, start time.Time) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf("event %s (%s %s): "+format, append([]any{e.UUID, e.Transport, e.SIPMethod}, args...)...)
	}
	if e.AppName != "dialtrap" || e.AppVersion == "" {
		errorf("app %q %q", e.AppName, e.AppVersion)
	}
	if _, err := uuid.Parse(e.UUID); err != nil {
		errorf("uuid: %v", err)
	}
	ts, err := event.ParseTime(e.Timestamp)
	if err != nil || ts.Before(start.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		errorf("timestamp %q outside the test (%v)", e.Timestamp, err)
	}
	if e.NodeID != n.nodeID() {
		errorf("node id %q, want %q", e.NodeID, n.nodeID())
	}
	if e.CollectedMethod != collected {
		errorf("collected_method %q, want %q", e.CollectedMethod, collected)
	}
	check := func(field, got, want string) {
		t.Helper()
		if want != "" && got != want {
			errorf("%s %q, want %q", field, got, want)
		}
	}
	check("transport", e.Transport, w.transport)
	check("method", e.SIPMethod, w.method)
	check("called_number", e.CalledNumber, w.number)
	check("user agent", e.SIPUserAgent, w.agent)
	check("source_ip", e.SourceIP, w.srcIP)
	check("destination_ip", e.DestinationIP, w.dstIP)
	check("tool", e.Tool, w.tool)
	if w.tool != "" && e.UASpoofed {
		errorf("ua_spoofed on the tool's own User-Agent %q", e.SIPUserAgent)
	}
	if w.srcPort != 0 && e.SourcePort != w.srcPort {
		errorf("source_port %d, want %d", e.SourcePort, w.srcPort)
	}
	wantPort := n.port
	if e.Transport == event.TLS {
		wantPort = n.tlsPort
	}
	if e.DestinationPort != wantPort {
		errorf("destination_port %d, want %d", e.DestinationPort, wantPort)
	}
	if w.method != "" && !strings.HasPrefix(e.SIPMessage, w.method+" sip:") {
		errorf("sip_message does not start with the request line: %.60q", e.SIPMessage)
	}
	if strings.Contains(e.SourceIP, ":") && !strings.Contains(w.srcIP, ":") {
		errorf("source_ip %q carries a port", e.SourceIP)
	}
}

// checkOutputsAgree asserts that the JSON log and syslog hold exactly the stored events.
func checkOutputsAgree(t *testing.T, n *node, evs []*event.Event) {
	t.Helper()
	byUUID := map[string]*event.Event{}
	for _, e := range evs {
		byUUID[e.UUID] = e
	}
	if len(byUUID) != len(evs) {
		t.Errorf("%d events share a UUID", len(evs)-len(byUUID))
	}
	lines := n.jsonLines()
	if len(lines) != len(evs) {
		t.Errorf("JSON log has %d lines, store has %d events", len(lines), len(evs))
	}
	keyOrder := regexp.MustCompile(`^\{"app_name":.*,"app_version":.*,"event_timestamp":.*,"event_uuid":.*,"created_by_node_id":.*,"collected_method":.*,"transport_type":.*,"source_ip":.*,"destination_ip":.*,"called_number":.*,"sip_method":.*,"sip_user_agent":.*,"sip_message":.*,"source_port":\d+,"destination_port":\d+,"source_verified":(true|false)(,"sip_message_length":\d+)?(,"tool":"[a-z0-9-]+")?(,"ua_spoofed":true)?(,"payload":\[[^]]*\])?(,"repeat_count":\d+)?\}$`)
	for _, line := range lines {
		var got event.Event
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("JSON log line is not JSON: %v: %.100q", err, line)
		}
		if !keyOrder.MatchString(line) {
			t.Errorf("JSON line keys out of contract order: %.200s", line)
		}
		stored, ok := byUUID[got.UUID]
		if !ok {
			t.Errorf("JSON line for %s not in the store", got.UUID)
			continue
		}
		if !reflect.DeepEqual(&got, stored) {
			t.Errorf("JSON line and stored event differ:\n json %+v\nstore %+v", got, *stored)
		}
	}
	if n.syslog == nil {
		return
	}
	var sl []string
	deadline := time.Now().Add(5 * time.Second)
	for sl = n.syslog.Lines(); len(sl) < len(evs) && time.Now().Before(deadline); sl = n.syslog.Lines() {
		time.Sleep(20 * time.Millisecond)
	}
	if len(sl) != len(evs) {
		t.Errorf("syslog got %d lines, store has %d events", len(sl), len(evs))
	}
	re := regexp.MustCompile(`^<13>\w{3} [ \d]\d \d\d:\d\d:\d\d dialtrap\[(\d+)\]: Source IP: (\S+), Method: (\S*), Agent: (.*)\n?$`)
	counts := map[string]int{}
	for _, e := range evs {
		counts[fmt.Sprintf("%s|%s|%s", e.SourceIP, e.SIPMethod, e.SIPUserAgent)]++
	}
	for _, line := range sl {
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("syslog line %q does not match the contract", line)
			continue
		}
		if m[1] != fmt.Sprint(n.cmd.Process.Pid) {
			t.Errorf("syslog PID %s, node is %d", m[1], n.cmd.Process.Pid)
		}
		counts[fmt.Sprintf("%s|%s|%s", m[2], m[3], m[4])]--
	}
	for k, c := range counts {
		if c != 0 {
			t.Errorf("syslog and store disagree on %q by %d", k, c)
		}
	}
}

func byKey(evs []*event.Event) map[string][]*event.Event {
	m := map[string][]*event.Event{}
	for _, e := range evs {
		k := e.Transport + " " + e.SIPMethod
		m[k] = append(m[k], e)
	}
	return m
}

func TestSIPpResponsive(t *testing.T) {
	need(t, "sipp")
	start := time.Now()
	n := startNode(t, nodeOpts{args: []string{"-r"}, syslog: true})
	target := fmt.Sprintf("127.0.0.1:%d", n.port)
	ports := map[string]int{"udp-options": testutil.FreePort(t, ""), "udp-invite": testutil.FreePort(t, ""), "tcp-invite": testutil.FreePort(t, ""), "v6": testutil.FreePort(t, "")}
	runs := []struct {
		name, scenario, number, transport, local, target string
		calls                                            int
	}{
		{"udp-options", "options.xml", "100", "u1", "127.0.0.1", target, 5},
		{"udp-invite", "invite.xml", "0046812118532", "u1", "127.0.0.1", target, 3},
		{"tcp-invite", "invite.xml", "9011441234567", "t1", "127.0.0.1", target, 3},
		{"v6", "options.xml", "00881", "u1", "::1", fmt.Sprintf("[::1]:%d", n.port), 2},
	}
	for _, r := range runs {
		out, err := run(t, 60*time.Second, "sipp", "-sf", abs(t, "testdata/"+r.scenario), "-s", r.number,
			"-m", fmt.Sprint(r.calls), "-r", "50", "-t", r.transport, "-i", r.local, "-p", fmt.Sprint(ports[r.name]),
			"-nostdin", "-timeout", "30", "-timeout_error", "-max_retrans", "2", r.target)
		if err != nil {
			// SIPp exits non-zero when any call failed: the replies were not what a PBX sends.
			t.Fatalf("sipp %s: %v\n%s", r.name, err, tail(out, 2000))
		}
	}
	n.stop()
	evs := n.events()
	got := byKey(evs)
	for _, c := range []struct {
		key   string
		min   int
		w     want
		exact bool
	}{
		{"UDP OPTIONS", 7, want{transport: "UDP", method: "OPTIONS", number: "100", agent: "sipp-options-probe", srcIP: "127.0.0.1", dstIP: "127.0.0.1", srcPort: ports["udp-options"], tool: "sipp"}, false},
		{"UDP INVITE", 3, want{transport: "UDP", method: "INVITE", number: "0046812118532", agent: "sipp-invite-attempt", srcIP: "127.0.0.1", dstIP: "127.0.0.1", srcPort: ports["udp-invite"], tool: "sipp"}, false},
		{"UDP ACK", 3, want{transport: "UDP", method: "ACK", number: "0046812118532", agent: "sipp-invite-attempt", srcIP: "127.0.0.1", dstIP: "127.0.0.1", srcPort: ports["udp-invite"]}, false},
		{"TCP INVITE", 3, want{transport: "TCP", method: "INVITE", number: "9011441234567", agent: "sipp-invite-attempt", srcIP: "127.0.0.1", dstIP: "127.0.0.1", tool: "sipp"}, true},
		{"TCP ACK", 3, want{transport: "TCP", method: "ACK", number: "9011441234567", srcIP: "127.0.0.1", dstIP: "127.0.0.1"}, true},
	} {
		evs := got[c.key]
		// SIPp's calls are alike but for Call-ID and tags: folded (repeat_count).
		var probes int
		for _, e := range evs {
			probes += int(e.Weight())
		}
		if probes < c.min || (c.exact && probes != c.min) {
			t.Errorf("%s: %d events standing for %d probes, want %d", c.key, len(evs), probes, c.min)
		}
		for _, e := range evs {
			if e.SourceIP == "::1" {
				continue // the IPv6 run, checked below
			}
			checkEvent(t, n, e, c.w, event.Responsive, start)
		}
	}
	var v6 int
	for _, e := range got["UDP OPTIONS"] {
		if e.SourceIP == "::1" {
			v6++
			checkEvent(t, n, e, want{transport: "UDP", method: "OPTIONS", number: "00881", srcIP: "::1", dstIP: "::1", srcPort: ports["v6"]}, event.Responsive, start)
		}
	}
	if v6 < 2 {
		t.Errorf("%d IPv6 events, want 2", v6)
	}
	checkOutputsAgree(t, n, evs)
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestSipviciousResponsiveAndPassive(t *testing.T) {
	need(t, "svmap", "svwar")
	for _, responsive := range []bool{true, false} {
		t.Run(map[bool]string{true: "responsive", false: "passive"}[responsive], func(t *testing.T) {
			start := time.Now()
			var args []string
			collected := event.Passive
			if responsive {
				args, collected = []string{"-r", "--persona", "Trap PBX 9"}, event.Responsive
			}
			n := startNode(t, nodeOpts{args: args, syslog: true})
			port := fmt.Sprint(n.port)
			optPort, invPort, warPort := testutil.FreePort(t, ""), testutil.FreePort(t, ""), testutil.FreePort(t, "")
			out, err := run(t, 60*time.Second, "svmap", "-p"+port, "-P", fmt.Sprint(optPort), "127.0.0.1")
			if err != nil {
				t.Fatalf("svmap: %v\n%s", err, out)
			}
			// svmap lists the devices that answered, with their Server header.
			if found := strings.Contains(out, "Trap PBX 9"); found != responsive {
				t.Errorf("svmap output (responsive=%v):\n%s", responsive, out)
			}
			if out, err := run(t, 60*time.Second, "svmap", "-p"+port, "-P", fmt.Sprint(invPort), "-m", "INVITE", "127.0.0.1"); err != nil {
				t.Fatalf("svmap INVITE: %v\n%s", err, out)
			}
			warOut, err := run(t, 60*time.Second, "svwar", "-p"+port, "-P", fmt.Sprint(warPort), "-e100-104", "-m", "REGISTER", "127.0.0.1")
			if err != nil {
				t.Fatalf("svwar: %v\n%s", err, warOut)
			}
			n.stop()
			evs := n.events()
			got := byKey(evs)
			if len(got["UDP OPTIONS"]) < 1 || len(got["UDP INVITE"]) < 1 {
				t.Fatalf("events by kind: %v", keys(got))
			}
			for _, e := range got["UDP OPTIONS"] {
				checkEvent(t, n, e, want{transport: "UDP", method: "OPTIONS", number: "100", agent: "friendly-scanner", srcIP: "127.0.0.1", dstIP: "127.0.0.1", srcPort: optPort, tool: "sipvicious"}, collected, start)
			}
			for _, e := range got["UDP INVITE"] {
				checkEvent(t, n, e, want{transport: "UDP", method: "INVITE", number: "100", agent: "friendly-scanner", srcIP: "127.0.0.1", dstIP: "127.0.0.1", srcPort: invPort, tool: "sipvicious"}, collected, start)
			}
			// svwar tries one random extension first. Passive mode does not answer it; responsive
			// mode challenges every REGISTER (401), as a real Asterisk does, and svwar gives up
			// on a PBX that challenges an unknown extension. Either way that probe is all.
			numbers := map[string]bool{}
			for _, e := range got["UDP REGISTER"] {
				checkEvent(t, n, e, want{transport: "UDP", method: "REGISTER", agent: "friendly-scanner", srcIP: "127.0.0.1", dstIP: "127.0.0.1", srcPort: warPort, tool: "sipvicious"}, collected, start)
				numbers[e.CalledNumber] = true
			}
			if len(numbers) != 1 || numbers["100"] {
				t.Errorf("svwar REGISTERs recorded for %v, want its one random extension", numbers)
			}
			if gaveUp := strings.Contains(warOut, "authentication request for an unknown extension"); gaveUp != responsive {
				t.Errorf("svwar output (responsive=%v):\n%s", responsive, warOut)
			}
			checkOutputsAgree(t, n, evs)
		})
	}
}

func keys(m map[string][]*event.Event) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, len(v)))
	}
	return out
}

func TestSipsakUDPTCPTLS(t *testing.T) {
	need(t, "sipsak")
	start := time.Now()
	n := startNode(t, nodeOpts{args: []string{"-r"}, syslog: true})
	for _, c := range []struct {
		number string
		args   []string
	}{
		{"200", []string{"-s", fmt.Sprintf("sip:200@127.0.0.1:%d", n.port)}},
		{"201", []string{"--transport=tcp", "-s", fmt.Sprintf("sip:201@127.0.0.1:%d", n.port)}},
		{"202", []string{"--transport=tls", "--tls-ignore-cert-failure", "-s", fmt.Sprintf("sip:202@127.0.0.1:%d", n.tlsPort)}},
	} {
		// sipsak exits 0 only when it got a 200 OK: the node answered over that transport.
		if out, err := run(t, 30*time.Second, "sipsak", c.args...); err != nil {
			t.Fatalf("sipsak %v: %v\n%s", c.args, err, out)
		}
	}
	n.stop()
	evs := n.events()
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3", len(evs))
	}
	for i, tr := range []string{"UDP", "TCP", "TLS"} {
		checkEvent(t, n, evs[i], want{transport: tr, method: "OPTIONS", number: fmt.Sprint(200 + i), agent: "sipsak 0.9.8.1", srcIP: "127.0.0.1", dstIP: "127.0.0.1", tool: "sipsak"}, event.Responsive, start)
	}
	checkOutputsAgree(t, n, evs)
}

// Garbage, empty datagrams, responses and oversized junk are recorded and the node keeps
// serving real probes afterwards.
func TestBadInputOverTheWire(t *testing.T) {
	need(t, "sipsak")
	n := startNode(t, nodeOpts{args: []string{"-r"}})
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", n.port))
	if err != nil {
		t.Fatal(err)
	}
	payloads := [][]byte{
		nil,
		[]byte("\x16\x03\x01\x00\xa5garbage\x00\xff"),
		[]byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1\r\nCSeq: 1 OPTIONS\r\n\r\n"),
		append([]byte("INVITE sip:1@x SIP/2.0\r\nTo: <sip:\x00\xfe@x>\r\n"), make([]byte, 60000)...),
	}
	for _, p := range payloads {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	tc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS sip:1@x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	tc.Close()
	if out, err := run(t, 30*time.Second, "sipsak", "-s", fmt.Sprintf("sip:77@127.0.0.1:%d", n.port)); err != nil {
		t.Fatalf("node stopped answering after bad input: %v\n%s", err, out)
	}
	n.stop()
	evs := n.events()
	if len(evs) != len(payloads)+3 {
		t.Errorf("%d events, want %d", len(evs), len(payloads)+3)
	}
	// Readers run concurrently, so find each probe by content, not by position.
	var empty, garbage, response, big, http, sipsak int
	for _, e := range evs {
		switch {
		case e.Transport == "UDP" && e.SIPMessage == "":
			empty++
		case e.Transport == "UDP" && strings.HasPrefix(e.SIPMessage, "\x16\x03"):
			garbage++
		case strings.HasPrefix(e.SIPMessage, "SIP/2.0 200 OK"):
			response++
			if e.SIPMethod != "" || e.CalledNumber != "NOT_FOUND" {
				t.Errorf("response recorded as method %q number %q", e.SIPMethod, e.CalledNumber)
			}
			continue
		case strings.HasPrefix(e.SIPMessage, "INVITE sip:1@x"):
			big++
			// Kept up to 16 KiB, with the length received.
			if want, n := event.StoredMessage(payloads[3]); e.SIPMessage != want || e.SIPMessageLength != n || n != len(payloads[3]) {
				t.Errorf("60 KB datagram kept as %d bytes, length %d; want %d of %d", len(e.SIPMessage), e.SIPMessageLength, len(want), len(payloads[3]))
			}
			continue
		case e.Transport == "TCP" && strings.HasPrefix(e.SIPMessage, "GET / HTTP/1.1"):
			http++
		case e.Transport == "TCP" && strings.HasPrefix(e.SIPMessage, "OPTIONS sip:1@x"):
			continue // the half-sent message, recorded when the client hung up
		case e.CalledNumber == "77":
			sipsak++
			continue
		default:
			t.Errorf("unexpected event %s %.60q", e.Transport, e.SIPMessage)
			continue
		}
		if e.SIPMethod != "" || e.CalledNumber != "" || e.SIPUserAgent != "" {
			t.Errorf("unparseable %.20q gave fields %q %q %q", e.SIPMessage, e.SIPMethod, e.CalledNumber, e.SIPUserAgent)
		}
	}
	if empty != 1 || garbage != 1 || response != 1 || big != 1 || http != 1 || sipsak != 1 {
		t.Errorf("empty %d garbage %d response %d big %d http %d sipsak %d: want one each", empty, garbage, response, big, http, sipsak)
	}
	checkOutputsAgree(t, n, evs)
}
