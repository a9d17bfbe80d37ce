//go:build opendht

package opendht

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/dialtrap/dialtrap/internal/opendht"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dialtrap-opendht-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dialtrap")
	build := exec.Command("go", "build", "-tags", "opendht", "-o", binary, "../../cmd/dialtrap")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build dialtrap -tags opendht (scripts/test-deps.sh installs libopendht-c-dev): %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type node struct {
	dir   string
	api   string
	ready map[string]any
	cmd   *exec.Cmd
	log   *testutil.SyncBuffer
}

// start runs a node with -R (no SIP, unless args give --sip-addr), the API on a free port
// and args, and waits for its ready file.
func start(t *testing.T, args ...string) *node {
	t.Helper()
	n := &node{dir: t.TempDir(), log: &testutil.SyncBuffer{}}
	ready := filepath.Join(n.dir, "ready.json")
	all := append([]string{"-a", "--api-addr", "127.0.0.1:0", "--data-dir", n.dir, "--ready-file", ready, "-v"}, args...)
	n.cmd = exec.Command(binary, all...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		n.cmd.Wait()
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, &n.ready) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready:\n%s", n.log)
		}
	}
	n.api = "http://" + n.ready["api"].(string)
	return n
}

func (n *node) get(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(n.api + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

func (n *node) report(t *testing.T) *peerinfo.OpenDHT {
	t.Helper()
	var r peerinfo.Report
	if code := n.get(t, "/peers", &r); code != 200 || r.OpenDHT == nil {
		t.Fatalf("/peers: %d, %+v", code, r)
	}
	return r.OpenDHT
}

// waitFor polls the node's OpenDHT report until ok says so.
func (n *node) waitFor(t *testing.T, what string, ok func(*peerinfo.OpenDHT) bool) *peerinfo.OpenDHT {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r := n.report(t)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; report %+v\n%s", what, r, n.log)
		}
	}
}

// reference is a report as the reference's nodes put it. dhtnode's put command takes one
// word as the value, so it carries no space: the timestamp has a T (which the reference's
// later versions write too).
func reference(uuid, ip string, ts time.Time) string {
	return fmt.Sprintf(`{"app_name":"sentrypeer","app_version":"v3.0.0","event_timestamp":"%s","event_uuid":"%s",`+
		`"created_by_node_id":"3b0b7c2e-5a1e-4e0f-8b9e-2d7d5c0e9a44","collected_method":"responsive","transport_type":"UDP",`+
		`"source_ip":"%s:5060","destination_ip":"203.0.113.5","called_number":"0046812345678","sip_method":"INVITE",`+
		`"sip_user_agent":"friendly-scanner","sip_message":"INVITE\r\n"}`, ts.UTC().Format("2006-01-02T15:04:05.000000000Z"), uuid, ip)
}

// A value put with dhtnode's CLI on the bad_actors key lands in the store and the API as a
// peer event from "opendht"; hostile values are refused and counted by reason.
func TestValuesFromDHTNode(t *testing.T) {
	dht := testutil.StartDHTNode(t, "")
	n := start(t, "-R", "--opendht", "--opendht-addr", ":0", "--opendht-bootstrap", fmt.Sprintf("127.0.0.1:%d", dht.Port))
	n.waitFor(t, "meeting dhtnode", func(r *peerinfo.OpenDHT) bool { return r.Nodes > 0 })

	dht.Command("p " + opendht.Key + " " + reference("6d1f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11", "198.51.100.77", time.Now()))
	dht.WaitOutput("Using h(bad_actors) = "+opendht.KeyHash, 5*time.Second)
	n.waitFor(t, "the value's arrival", func(r *peerinfo.OpenDHT) bool { return r.Accepted == 1 })
	var hit map[string]any
	for deadline := time.Now().Add(10 * time.Second); n.get(t, "/ip-addresses/198.51.100.77", &hit) != 200; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the address never reached the API")
		}
	}
	if hit["seen_locally"] != false || hit["seen_by_peers"] != 1.0 || hit["seen_by_trusted_peers"] != 0.0 {
		t.Errorf("lookup %v: want seen by one untrusted peer, not locally", hit)
	}

	// Hostile values from a second OpenDHT node of the test's own, which can put what
	// dhtnode's prompt cannot: a space, a NUL, 70 KiB.
	other, err := opendht.Open(0, []string{fmt.Sprintf("127.0.0.1:%d", dht.Port)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for deadline := time.Now().Add(15 * time.Second); other.Nodes() < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			break // one known node is enough for a put to reach dhtnode's storage
		}
	}
	spaced := strings.Replace(reference("7e2f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11", "198.51.100.78", time.Now()), "T", " ", 1)
	for _, v := range []string{
		spaced + "\x00", // the reference's own timestamp form, with a trailing NUL: accepted
		"garbage",
		strings.Repeat("x", 70<<10),
		reference("8e2f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11", "198.51.100.79", time.Now().Add(-40*24*time.Hour)),
		reference("9e2f1c52-7a8e-4f35-9c3a-0b8c2b1f0a11", "not-an-ip", time.Now()),
	} {
		other.Put([]byte(v))
	}
	r := n.waitFor(t, "the hostile values", func(r *peerinfo.OpenDHT) bool {
		return r.Accepted == 2 && r.Refused["schema"] >= 2 && r.Refused["timestamp"] >= 1
	})
	t.Logf("OpenDHT report after the values: received %d, accepted %d, refused %v", r.Received, r.Accepted, r.Refused)
	// OpenDHT refuses a 70 KiB value itself; if it ever passes one on, the bridge must count it.
	if r.Refused["size"] > 0 {
		t.Logf("oversized values refused by the bridge: %d", r.Refused["size"])
	}

	// The store says where the events came from.
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.cmd.Wait()
	db, err := sql.Open("sqlite", filepath.Join(n.dir, "dialtrap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(context.Background(), `SELECT source_ip, from_peer, peer_id FROM events ORDER BY source_ip`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var ip, peer string
		var fromPeer bool
		if err := rows.Scan(&ip, &fromPeer, &peer); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %v %s", ip, fromPeer, peer))
	}
	want := []string{"198.51.100.77 true opendht", "198.51.100.78 true opendht"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stored events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// With --opendht-publish a probe this node captured is put under bad_actors in the
// reference's 13-key JSON, and dhtnode's get reads it back.
func TestPublishedEventReadByDHTNode(t *testing.T) {
	dht := testutil.StartDHTNode(t, "")
	// Port 0 and the ready file: a port probed and released here could be taken (by any
	// test's outgoing TCP connection) before the node binds it.
	n := start(t, "-r", "--sip-addr", "127.0.0.1:0", "--sip-tls=false", "--never-block-defaults=false",
		"--opendht", "--opendht-addr", ":0", "--opendht-publish", "--opendht-bootstrap", fmt.Sprintf("127.0.0.1:%d", dht.Port))
	sip := n.ready["sip_tcp"].(string) // sipsak goes over TCP
	n.waitFor(t, "meeting dhtnode", func(r *peerinfo.OpenDHT) bool { return r.Nodes > 0 })
	// TCP proves the source: only proven sources are shared.
	out, err := exec.Command("sipsak", "-s", "sip:100@"+sip, "-E", "tcp").CombinedOutput()
	if err != nil {
		t.Logf("sipsak (its exit status is the reply's, not a failure): %v\n%s", err, out)
	}
	n.waitFor(t, "the put", func(r *peerinfo.OpenDHT) bool { return r.Published == 1 && r.PutsConfirmed >= 1 })
	dht.Command("g " + opendht.Key)
	dht.WaitOutput(`"source_ip":"127.0.0.1"`, 10*time.Second)
	if out := dht.Output(); !strings.Contains(out, `"transport_type":"TCP"`) || !strings.Contains(out, `"app_name":"dialtrap"`) || strings.Contains(out, `"source_port"`) {
		t.Fatalf("dhtnode read:\n%s", out)
	}
}

// Without --opendht the node opens no UDP socket at all (-R: no SIP either) and /peers is a
// 404; with it, one.
func TestSilentWithoutOpenDHT(t *testing.T) {
	quiet := start(t, "-R")
	if code := quiet.get(t, "/peers", nil); code != 404 {
		t.Errorf("/peers without -p or --opendht: %d", code)
	}
	if n := udpSockets(t, quiet.cmd.Process.Pid); n != 0 {
		t.Errorf("a node without --opendht has %d UDP sockets", n)
	}
	loud := start(t, "-R", "--opendht", "--opendht-addr", ":0")
	if n := udpSockets(t, loud.cmd.Process.Pid); n == 0 {
		t.Error("a node with --opendht has no UDP socket: the test cannot tell silence")
	}
}

// udpSockets counts the UDP sockets a process holds, from /proc.
func udpSockets(t *testing.T, pid int) int {
	t.Helper()
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(l); len(fs) > 9 {
				inodes[fs[9]] = true
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") && inodes[strings.Trim(target[7:], "[]")] {
			n++
		}
	}
	return n
}
