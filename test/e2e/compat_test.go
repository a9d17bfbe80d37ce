package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// With --event-compat ip-port the JSON log and the webhook write source_ip and destination_ip
// as address:port ([IPv6]:port), in the contract's key order, for probes from sipsak (UDP,
// TCP) and SIPp (over ::1). The store, the API and export keep bare addresses, and importing
// the JSON log gives back the stored events, ports and all.
func TestEventCompatIPPort(t *testing.T) {
	need(t, "sipsak", "sipp")
	var mu sync.Mutex
	var bodies []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer hook.Close()
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--event-compat", "ip-port", "-w", hook.URL}})

	for _, args := range [][]string{
		{"-s", fmt.Sprintf("sip:300@127.0.0.1:%d", n.port)},
		{"--transport=tcp", "-s", fmt.Sprintf("sip:301@127.0.0.1:%d", n.port)},
	} {
		if out, err := run(t, 30*time.Second, "sipsak", args...); err != nil {
			t.Fatalf("sipsak %v: %v\n%s", args, err, out)
		}
	}
	if out, err := run(t, 60*time.Second, "sipp", "-sf", abs(t, "testdata/options.xml"), "-m", "1", "-t", "u1", "-i", "::1",
		"-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "30", "-timeout_error", "-s", "302", fmt.Sprintf("[::1]:%d", n.port)); err != nil {
		t.Fatalf("sipp: %v\n%s", err, tail(out, 2000))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(bodies)
		mu.Unlock()
		if got == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook got %d events, want 3:\n%s", got, n.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The API answers with the bare address the store holds.
	a := api{t, "http://" + n.apiAddr, ""}
	if code, _, body := a.get("/ip-addresses/127.0.0.1"); code != http.StatusOK {
		t.Errorf("/ip-addresses/127.0.0.1: %d %s", code, body)
	}
	n.stop()

	evs := n.events()
	if len(evs) != 3 {
		t.Fatalf("%d events stored, want 3", len(evs))
	}
	byUUID := map[string]*event.Event{}
	for _, e := range evs {
		byUUID[e.UUID] = e
		if net.ParseIP(e.SourceIP) == nil || strings.Contains(e.SourceIP, "]") || e.SourcePort == 0 || e.DestinationPort != n.port {
			t.Errorf("stored %s:%d -> %s:%d: want bare addresses, the ports apart", e.SourceIP, e.SourcePort, e.DestinationIP, e.DestinationPort)
		}
	}
	keyOrder := regexp.MustCompile(`^\{"app_name":"[^"]*","app_version":"[^"]*","event_timestamp":"[^"]*","event_uuid":"[^"]*","created_by_node_id":"[^"]*","collected_method":"responsive","transport_type":"(UDP|TCP)","source_ip":"[^"]*","destination_ip":"[^"]*","called_number":"30[0-2]","sip_method":"OPTIONS","sip_user_agent":"[^"]*","sip_message":".*","source_port":\d+,"destination_port":\d+,"source_verified":(true|false),"tool":"(sipsak|sipp)"\}$`)
	lines := n.jsonLines()
	if len(lines) != 3 {
		t.Fatalf("JSON log has %d lines, want 3", len(lines))
	}
	seen6 := false
	for _, line := range lines {
		if !keyOrder.MatchString(line) {
			t.Errorf("JSON line out of the contract's keys and order: %.300s", line)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("JSON line is not JSON: %v: %.100q", err, line)
		}
		e, ok := byUUID[got["event_uuid"].(string)]
		if !ok {
			t.Fatalf("JSON line of an event not stored: %.200s", line)
		}
		wantSrc := net.JoinHostPort(e.SourceIP, strconv.Itoa(e.SourcePort))
		wantDst := net.JoinHostPort(e.DestinationIP, strconv.Itoa(e.DestinationPort))
		if got["source_ip"] != wantSrc || got["destination_ip"] != wantDst {
			t.Errorf("source_ip %v, destination_ip %v; want %s and %s", got["source_ip"], got["destination_ip"], wantSrc, wantDst)
		}
		seen6 = seen6 || strings.HasPrefix(wantSrc, "[::1]:")
		// Every other key holds what the contract spelling holds.
		plain, _ := e.AppendJSON(nil)
		var want map[string]any
		if err := json.Unmarshal(plain, &want); err != nil {
			t.Fatal(err)
		}
		want["source_ip"], want["destination_ip"] = wantSrc, wantDst
		if !reflect.DeepEqual(got, want) {
			t.Errorf("JSON line\n got %v\nwant %v", got, want)
		}
	}
	if !seen6 {
		t.Errorf("no line from [::1]:port among\n%s", strings.Join(lines, "\n"))
	}
	// The webhook body is the JSON log line.
	mu.Lock()
	for _, b := range bodies {
		if !slices.Contains(lines, b) {
			t.Errorf("webhook body is no JSON log line: %.300s", b)
		}
	}
	mu.Unlock()

	// Export keeps the store's bare addresses.
	code, out, errOut := dialtrap(t, "export", "--data-dir", n.dir)
	if code != 0 || strings.Count(out, `"source_ip":"127.0.0.1","destination_ip":"127.0.0.1"`) != 2 || !strings.Contains(out, `"source_ip":"::1","destination_ip":"::1"`) {
		t.Errorf("export: exit %d, %s %s; want bare addresses", code, out, errOut)
	}

	// The JSON log imports as the events stored.
	dir := t.TempDir()
	code, out, errOut = dialtrap(t, "import", "--data-dir", dir, filepath.Join(n.dir, "dialtrap_json.log"))
	if code != 0 || !strings.Contains(out, "3 records, 3 events added, 0 already stored, 0 skipped") {
		t.Fatalf("import: exit %d\n%s\n%s", code, out, errOut)
	}
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "dialtrap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var imported []*event.Event
	if err := s.Events(context.Background(), func(e *event.Event) error { imported = append(imported, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(imported) != 3 {
		t.Fatalf("%d events imported, want 3", len(imported))
	}
	for _, e := range imported {
		if want := byUUID[e.UUID]; !reflect.DeepEqual(e, want) {
			t.Errorf("imported\n got %+v\nwant %+v", e, want)
		}
	}
}

// A --event-compat the node does not know is a usage error, from any source.
func TestEventCompatBadValue(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
	}{
		{[]string{"--event-compat", "ip:port"}, ""},
		{nil, "DIALTRAP_EVENT_COMPAT=tpot"},
	} {
		cmd := exec.Command(binary, append(c.args, "--data-dir", t.TempDir(), "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0")...)
		cmd.Env = cleanEnv()
		if c.env != "" {
			cmd.Env = append(cmd.Env, c.env)
		}
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "--event-compat") || !strings.Contains(string(out), "ip-port") {
			t.Errorf("%v %s: exit %d (%v), %s; want 2 and a message naming the values", c.args, c.env, code, err, out)
		}
	}
}
