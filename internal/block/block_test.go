package block

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/firewall"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sighting is a verified probe from a public address, seen now.
func sighting(i int, ip string, verified bool) *event.Event {
	return &event.Event{AppName: event.AppName, Timestamp: event.FormatTime(time.Now()),
		UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Transport: event.UDP, SourceIP: ip,
		CalledNumber: "0046812118532", SourceVerified: verified}
}

// startAPI serves st on addr (127.0.0.1:0 for a new port).
func startAPI(t *testing.T, st *sqlite.Store, addr, token string) *api.Server {
	t.Helper()
	ips, _ := feed.NewIPGuard(nil, true)
	nums, _ := feed.NewNumberGuard(nil)
	srv := api.New(api.Config{Addr: addr, Store: st, Feeds: st, Guards: feed.Guards{IPs: ips, Numbers: nums},
		Token: token, Version: "t", FeedPoll: 20 * time.Millisecond})
	var err error
	for range 50 { // the old listener's port may take a moment to be free again
		if err = srv.Start(context.Background()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// The agent loads a node's set into a real nftables set, adds a new source within the poll,
// survives the node's restart resuming from its cursor (a few bytes, no second full sync),
// and survives its own restart the same way. What it refuses never reaches the set.
func TestAgentFollowsNodeIntoNftables(t *testing.T) {
	ns := testutil.NewNetns(t, "block")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 3000
	var batch []*event.Event
	for i := range n {
		batch = append(batch, sighting(i, fmt.Sprintf("45.%d.%d.%d", i>>16, (i>>8)&255, i&255), true))
	}
	batch = append(batch, sighting(n, "91.92.240.3", false), sighting(n+1, "10.0.0.9", true), sighting(n+2, "203.0.113.200", true))
	if err := st.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Below the ephemeral range: the node restarts on this address later, and while it is
	// down no outgoing connection can take the port.
	srv := startAPI(t, st, net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1"))), "tok")
	addr := srv.Addr().String()

	set, err := firewall.NewNFT(firewall.NFTOptions{NetNS: ns.FD()})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	// The agent's own list protects 45.0.0.7 whatever the node says.
	guard, _ := feed.NewIPGuard([]string{"45.0.0.7"}, true)
	state := filepath.Join(t.TempDir(), "block-state.json")
	run := func() (stop func()) {
		a, err := New(Config{Nodes: []Node{{URL: "http://" + addr, Token: "tok"}}, Set: set,
			Query: url.Values{"ttl": {"1h"}}, Guard: guard, StateFile: state})
		if err != nil {
			t.Fatal(err)
		}
		return runAgent(t, a)
	}
	stop := run()
	count := func() int {
		v4, v6, err := set.Len(ctx)
		if err != nil {
			return -1 // the agent has not made the table yet
		}
		return v4 + v6
	}
	testutil.Eventually(t, "the whole set is loaded", 20*time.Second, func() bool { return count() == n-1 })
	list := ns.Run(t, "", "nft", "list", "set", "inet", "dialtrap", "blocklist4")
	for _, ip := range []string{"91.92.240.3", "10.0.0.9", "203.0.113.200", "45.0.0.7 "} {
		if strings.Contains(list, ip) {
			t.Errorf("the set holds %s (unverified, private, documentation or the agent's own never-block)", strings.TrimSpace(ip))
		}
	}
	// An hour after it was last seen, that is, a moment ago.
	if !regexp.MustCompile(`45\.0\.11\.183 timeout (1h|59m\d+s)`).MatchString(list) {
		t.Errorf("element timeouts: %.300s", list)
	}
	first := stateOf(t, state)

	// A new source appears in the set within the poll and one apply.
	start := time.Now()
	st.Write(ctx, []*event.Event{sighting(n+3, "193.32.162.5", true)})
	testutil.Eventually(t, "the new source is applied", 5*time.Second, func() bool {
		_, err := ns.Try("", "nft", "get", "element", "inet", "dialtrap", "blocklist4", "{ 193.32.162.5 }")
		return err == nil
	})
	t.Logf("a new source reached the nft set in %s", time.Since(start).Round(time.Millisecond))

	// The node restarts on the same address: the agent reconnects and resumes.
	srv.Close(ctx)
	st.Write(ctx, []*event.Event{sighting(n+4, "193.32.162.6", true)})
	srv = startAPI(t, st, addr, "tok")
	defer func() { srv.Close(ctx) }()
	testutil.Eventually(t, "the source written while the node was down is applied", 10*time.Second, func() bool {
		_, err := ns.Try("", "nft", "get", "element", "inet", "dialtrap", "blocklist4", "{ 193.32.162.6 }")
		return err == nil
	})
	stop()
	after := stateOf(t, state)
	if after.FullSyncs != 1 || after.Reconnects < 1 {
		t.Errorf("full syncs %d reconnects %d, want 1 full sync and a reconnect", after.FullSyncs, after.Reconnects)
	}
	resumed := after.Bytes - first.Bytes
	t.Logf("full sync %d bytes; everything after it, reconnect included, %d bytes", first.Bytes, resumed)
	if resumed > first.Bytes/20 {
		t.Errorf("the resume cost %d bytes against %d for the whole set: it was reloaded", resumed, first.Bytes)
	}

	// The agent restarts: it resumes from its state file too, and an element someone else
	// put in its set stays (it removes nothing it did not add).
	ns.Run(t, "", "nft", "add", "element", "inet", "dialtrap", "blocklist4", "{ 198.51.100.77 }")
	stop = run()
	st.Write(ctx, []*event.Event{sighting(n+5, "193.32.162.7", true)})
	testutil.Eventually(t, "the agent restarted applies new sources", 10*time.Second, func() bool {
		_, err := ns.Try("", "nft", "get", "element", "inet", "dialtrap", "blocklist4", "{ 193.32.162.7 }")
		return err == nil
	})
	stop()
	if s := stateOf(t, state); s.FullSyncs != 1 || count() != n+3 {
		t.Errorf("after the agent's restart: %d full syncs, %d elements; want 1 and %d", s.FullSyncs, count(), n+3)
	}
	if _, err := ns.Try("", "nft", "get", "element", "inet", "dialtrap", "blocklist4", "{ 198.51.100.77 }"); err != nil {
		t.Errorf("the element added by hand is gone: %v", err)
	}
}

// ipset mode and the dry run: the same stream, applied as ipsets or printed.
func TestAgentIPSetAndDryRun(t *testing.T) {
	ns := testutil.NewNetns(t, "blockip")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write(ctx, []*event.Event{sighting(1, "45.134.26.1", true), sighting(2, "2a0e:8f02:21c0::7", true), sighting(3, "91.92.240.3", false)})
	srv := startAPI(t, st, "127.0.0.1:0", "")
	defer srv.Close(ctx)
	ipset, err := firewall.NewIPSet(firewall.IPSetOptions{Netns: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	var printed testutil.SyncBuffer
	for _, set := range []firewall.Set{ipset, firewall.NewDryRun(&printed)} {
		guard, _ := feed.NewIPGuard(nil, true)
		a, err := New(Config{Nodes: []Node{{URL: "http://" + srv.Addr().String()}}, Set: set, Query: url.Values{"ttl": {"1h"}}, Guard: guard})
		if err != nil {
			t.Fatal(err)
		}
		stop := runAgent(t, a)
		testutil.Eventually(t, "the agent syncs", 10*time.Second, func() bool { return a.Snapshot().Nodes[0].Applied == 2 })
		stop()
	}
	ipset.Close()
	four, six := ns.Run(t, "", "ipset", "list", "dialtrap4"), ns.Run(t, "", "ipset", "list", "dialtrap6")
	if !strings.Contains(four, "45.134.26.1 timeout") || !strings.Contains(six, "2a0e:8f02:21c0::7 timeout") || strings.Contains(four, "91.92.240.3") {
		t.Errorf("ipsets:\n%s\n%s", four, six)
	}
	out := printed.String()
	if !strings.Contains(out, "add 45.134.26.1 timeout 3") || !strings.Contains(out, "add 2a0e:8f02:21c0::7 timeout") || strings.Contains(out, "91.92.240.3") {
		t.Errorf("dry run printed:\n%s", out)
	}
}

func stateOf(t *testing.T, path string) NodeState {
	t.Helper()
	s, err := ReadState(path)
	if err != nil || len(s.Nodes) != 1 {
		t.Fatalf("state file: %+v %v", s, err)
	}
	return *s.Nodes[0]
}

// A node that answers garbage, refuses the token or sends a huge line ends the connection
// with an error the status shows, and the agent keeps trying; nothing reaches the set.
func TestAgentSurvivesBadNodes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answers := []string{
		"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n{\"op\":\"add\",\"ip\":\"not-an-ip\"}\n{\"op\":\"add\",\"ip\":\"127.0.0.1\",\"timeout\":60}\nnot json\n",
		"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n{\"op\":\"add\",\"ip\":\"" + strings.Repeat("9", 10000) + "\"}\n",
	}
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			c.Read(buf)
			c.Write([]byte(answers[i%len(answers)]))
			c.Close()
		}
	}()
	var out strings.Builder
	set := firewall.NewDryRun(&out)
	guard, _ := feed.NewIPGuard(nil, true)
	a, err := New(Config{Nodes: []Node{{URL: "http://" + ln.Addr().String()}}, Set: set, Guard: guard,
		Backoff: backoffFast})
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	testutil.Eventually(t, "the agent has met each kind of bad answer", 10*time.Second, func() bool {
		return a.Snapshot().Nodes[0].Reconnects >= 6
	})
	stop()
	s := a.Snapshot().Nodes[0]
	if s.Refused < 2 || s.Applied != 0 || strings.Contains(out.String(), "add ") {
		t.Errorf("refused %d applied %d, set changes:\n%s", s.Refused, s.Applied, out.String())
	}
}

var backoffFast = backoffPolicy(10*time.Millisecond, 50*time.Millisecond)

// A node's lines are checked, not trusted: a timeout beyond a year is refused (it would
// overflow), none or a longer one than the agent's TTL gets the TTL, and the set holds no
// more than MaxElements addresses.
func TestAgentBoundsWhatNodesSend(t *testing.T) {
	lines := `{"op":"add","ip":"45.1.1.1","timeout":9223372036854775807}
{"op":"add","ip":"45.1.1.2"}
{"op":"add","ip":"45.1.1.3","timeout":999999}
{"op":"add","ip":"45.1.1.4","timeout":60}
{"op":"add","ip":"45.1.1.5","timeout":60}
{"op":"add","ip":"45.1.1.6","timeout":60}
{"op":"sync","cursor":"1.1.1.1","full":true}
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, lines)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	var out testutil.SyncBuffer
	a, err := New(Config{Nodes: []Node{{URL: srv.URL}}, Set: firewall.NewDryRun(&out), TTL: time.Hour, MaxElements: 4})
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	testutil.Eventually(t, "the batch is applied", 5*time.Second, func() bool { return a.Snapshot().Nodes[0].Cursor != "" })
	stop()
	got := out.String()
	for _, want := range []string{"add 45.1.1.2 timeout 3600s\n", "add 45.1.1.3 timeout 3600s\n", "add 45.1.1.4 timeout 60s\n", "add 45.1.1.5 timeout 60s\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("applied:\n%s\nwant %q", got, want)
		}
	}
	s := a.Snapshot()
	if strings.Contains(got, "45.1.1.1") || strings.Contains(got, "45.1.1.6") || s.Full != 1 || s.Nodes[0].Refused != 2 {
		t.Errorf("applied:\n%s\nrefused %d, over the bound %d; want 45.1.1.1 refused and 45.1.1.6 over the bound of 4", got, s.Nodes[0].Refused, s.Full)
	}
}

// A firewall reload ('nft flush ruleset') removes the agent's table: it notices, makes it
// again, and fetches the whole set from the node.
func TestAgentSurvivesFirewallReload(t *testing.T) {
	ns := testutil.NewNetns(t, "blockrl")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write(ctx, []*event.Event{sighting(1, "45.134.26.1", true), sighting(2, "45.134.26.2", true)})
	srv := startAPI(t, st, "127.0.0.1:0", "")
	defer srv.Close(ctx)
	set, err := firewall.NewNFT(firewall.NFTOptions{NetNS: ns.FD()})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	a, err := New(Config{Nodes: []Node{{URL: "http://" + srv.Addr().String()}}, Set: set,
		Query: url.Values{"ttl": {"1h"}}, CheckEvery: 50 * time.Millisecond, Backoff: backoffFast})
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	has := func() bool {
		out, err := ns.Try("", "nft", "list", "set", "inet", "dialtrap", "blocklist4")
		return err == nil && strings.Contains(out, "45.134.26.1") && strings.Contains(out, "45.134.26.2")
	}
	testutil.Eventually(t, "the set is loaded", 5*time.Second, has)
	ns.Run(t, "", "nft", "flush", "ruleset")
	testutil.Eventually(t, "the set is made and loaded again after the reload", 10*time.Second, has)
	if s := a.Snapshot(); s.Reloads != 1 || s.Nodes[0].FullSyncs != 2 {
		t.Errorf("reloads %d full syncs %d, want 1 and 2", s.Reloads, s.Nodes[0].FullSyncs)
	}
	if chain := ns.Run(t, "", "nft", "list", "chain", "inet", "dialtrap", "input"); !strings.Contains(chain, "@blocklist4") {
		t.Errorf("the drop rule was not made again:\n%s", chain)
	}
	stop()

	// A reboot (or --flush-on-exit) while the agent is down: its state file holds cursors of
	// a set that is gone, so it fetches the whole set again rather than resume.
	ns.Run(t, "", "nft", "flush", "ruleset")
	stop = runAgent(t, a)
	testutil.Eventually(t, "the set is loaded again after the agent's restart", 10*time.Second, has)
	if s := a.Snapshot(); s.Nodes[0].FullSyncs != 3 {
		t.Errorf("full syncs %d, want 3", s.Nodes[0].FullSyncs)
	}
	stop()
}

// A state file written for another selection (another TTL, filters or never-block list) is
// not resumed from: its cursors belong to another set.
func TestAgentStateOfAnotherSelection(t *testing.T) {
	state := filepath.Join(t.TempDir(), "s.json")
	os.WriteFile(state, []byte(`{"fingerprint":"ttl=30m","nodes":[{"url":"http://127.0.0.1:1","cursor":"1.2.3.4"}]}`), 0o600)
	for fp, want := range map[string]string{"ttl=30m": "1.2.3.4", "ttl=24h": ""} {
		a, err := New(Config{Nodes: []Node{{URL: "http://127.0.0.1:1"}}, Set: firewall.NewDryRun(io.Discard), StateFile: state, Fingerprint: fp})
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Snapshot().Nodes[0].Cursor; got != want {
			t.Errorf("fingerprint %s: cursor %q, want %q", fp, got, want)
		}
	}
}

// runAgent runs a until the returned stop is called, which checks that Run ended cleanly.
func runAgent(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// A node sending sync lines as fast as it can costs at most a state file write a second.
func TestAgentStateWritesBounded(t *testing.T) {
	var lines strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&lines, "{\"op\":\"add\",\"ip\":\"45.2.%d.%d\",\"timeout\":60}\n{\"op\":\"sync\",\"cursor\":\"1.%d.1.1\"}\n", i/256, i%256, i)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, lines.String())
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	a, err := New(Config{Nodes: []Node{{URL: srv.URL}}, Set: firewall.NewDryRun(io.Discard), StateFile: filepath.Join(t.TempDir(), "s.json")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := runAgent(t, a)
	testutil.Eventually(t, "every line is applied", 10*time.Second, func() bool { return a.Snapshot().Nodes[0].Applied == 5000 })
	stop()
	a.mu.Lock()
	writes := a.writes
	a.mu.Unlock()
	if limit := int(time.Since(start)/time.Second) + 3; writes > limit {
		t.Errorf("%d state file writes for 5,000 sync lines in %s, want at most %d", writes, time.Since(start).Round(time.Millisecond), limit)
	}
	if s, err := ReadState(a.cfg.StateFile); err != nil || s.Nodes[0].Cursor != "1.4999.1.1" {
		t.Errorf("the last cursor is not the one written at exit: %+v %v", s.Nodes, err)
	}
}

// A node whose SYNs go unanswered (a firewall dropping them; here a listener whose backlog is
// full and that never accepts) costs a connection attempt DialTimeout, then the back-off, not
// the kernel's minutes.
func TestAgentConnectTimeout(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	// Fill the backlog: later SYNs are dropped and their connects hang.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel still accepts connections on a full backlog")
	}
	a, err := New(Config{Nodes: []Node{{URL: "http://" + addr}}, Set: firewall.NewDryRun(io.Discard),
		DialTimeout: 300 * time.Millisecond, Backoff: backoffFast})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := runAgent(t, a)
	testutil.Eventually(t, "attempts time out and are retried", 5*time.Second, func() bool { return a.Snapshot().Nodes[0].Reconnects >= 3 })
	stop()
	if e := a.Snapshot().Nodes[0].LastError; !strings.Contains(e, "timeout") {
		t.Errorf("last error %q, want a timeout", e)
	}
	t.Logf("3 attempts in %s", time.Since(start).Round(time.Millisecond))
}
