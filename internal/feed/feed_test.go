package feed

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIPGuard(t *testing.T) {
	file := filepath.Join(t.TempDir(), "allow.txt")
	os.WriteFile(file, []byte("# carriers we peer with\n203.0.113.0/24\n2001:db8:aa::1 # their resolver\n"), 0o644)
	g, err := NewIPGuard([]string{"198.18.7.7", file, "::ffff:192.0.2.0/120"}, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewIPGuard(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ip            string
		listed, deflt bool
	}{
		{"198.18.7.7", true, true},
		{"198.18.7.8", false, true},
		{"203.0.113.77", true, true},
		{"2001:db8:aa::1", true, true},
		{"2001:db8:aa::2", false, true},
		{"192.0.2.9", true, true}, // the mapped prefix protects IPv4
		{"::ffff:203.0.113.1", true, true},
		{"127.0.0.1", false, true},
		{"10.1.2.3", false, true},
		{"fe80::1", false, true},
		{"ff02::1", false, true},
		{"8.8.8.8", false, false},
		{"2a00:1450::1", false, false},
		{"100.64.0.1", false, true},
		{"64:ff9b::a00:1", false, true}, // NAT64, 6to4 and IPv4-compatible forms: a translator
		{"2002:a00:1::1", false, true},
		{"::7f00:1", false, true},
	} {
		a := netip.MustParseAddr(c.ip)
		if g.Protects(a) != c.listed || d.Protects(a) != c.deflt {
			t.Errorf("%s: listed %v default %v, want %v %v", c.ip, g.Protects(a), d.Protects(a), c.listed, c.deflt)
		}
	}
	if !g.ProtectsString("not an ip") {
		t.Error("an unparseable key must never reach a firewall")
	}
	for _, bad := range []string{"/nonexistent/allow", "10.0.0.0/33"} {
		if _, err := NewIPGuard([]string{bad}, false); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	os.WriteFile(file, []byte("203.0.113.0/24\nnonsense\n"), 0o644)
	if _, err := NewIPGuard([]string{file}, false); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad file line: %v", err)
	}
}

func TestNumberGuard(t *testing.T) {
	g, err := NewNumberGuard([]string{"+441632960000", "0800*"})
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{
		"112": true, "911": true, "999": true, "000": true, "9911": true, "100": true, "12345": true,
		"441632960000": true, "+441632960000": true, "08001234567": true,
		"0046812118532": false, "+46812118532": false, "900046812118532": false,
		"NOT_FOUND": true, "": true, "1' OR 1=1": true, "0001": true,
		"000123456": false, // 000 only as a whole number: a prefix of long numbers is international dialling
	} {
		if got := g.Protects(n); got != want {
			t.Errorf("%q: %v, want %v", n, got, want)
		}
	}
	if _, err := NewNumberGuard([]string{"12a"}); err == nil {
		t.Error("a number with letters: no error")
	}
}

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// fixture stores a small mixed set: verified and not, IPv4 and IPv6, protected ones, numbers.
func fixture(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var batch []*event.Event
	add := func(ago time.Duration, ip, number string, verified bool) {
		i := len(batch)
		batch = append(batch, &event.Event{
			AppName: event.AppName, Timestamp: event.FormatTime(now.Add(-ago)),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "n",
			CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: ip, SourcePort: 5060,
			DestinationIP: "198.51.100.1", DestinationPort: 5060, CalledNumber: number, SIPMethod: "INVITE",
			SIPUserAgent: "friendly-scanner", SourceVerified: verified,
		})
	}
	add(30*time.Minute, "45.134.26.1", "0046812118532", true)
	add(10*time.Minute, "45.134.26.1", "0046812118532", false)
	add(2*time.Hour, "2a0e:8f02:21c0::7", "00972599123456", true)
	add(5*time.Minute, "185.53.88.4", "911", true)           // a number never in a feed
	add(time.Minute, "91.92.240.3", "100", false)            // unverified: a forged source, maybe
	add(48*time.Hour, "80.94.95.200", "+441632960123", true) // old
	add(time.Minute, "10.9.9.9", "0046812118533", true)      // private: never in a feed
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return s
}

func guards(t *testing.T) Guards {
	ips, err := NewIPGuard(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	nums, _ := NewNumberGuard(nil)
	return Guards{IPs: ips, Numbers: nums}
}

func TestRenderGolden(t *testing.T) {
	s := fixture(t)
	for _, c := range []struct {
		name  string
		list  store.List
		query string
	}{
		{"plain", store.IPAddresses, ""},
		{"plain-any", store.IPAddresses, "verified=any"},
		{"ipset", store.IPAddresses, "format=ipset&ttl=24h"},
		{"nft", store.IPAddresses, "format=nft&ttl=86400&table=edge&set4=bad4&set6=bad6"},
		{"json", store.IPAddresses, "format=json&ttl=24h"},
		{"csv", store.IPAddresses, "format=csv&min_count=2&verified=any"},
		{"numbers-plain", store.CalledNumbers, ""},
		{"numbers-json", store.CalledNumbers, "format=json&since=2026-11-30"},
		{"numbers-csv", store.CalledNumbers, "format=csv&verified=any"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, _ := url.ParseQuery(c.query)
			q, err := ParseQuery(c.list, v, now)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := Render(context.Background(), &b, s, q, guards(t), now, nil); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, "testdata/"+c.name+".golden", []byte(b.String()))
			if q.Format == JSON {
				var v any
				if err := json.Unmarshal([]byte(b.String()), &v); err != nil {
					t.Errorf("not JSON: %v", err)
				}
			}
		})
	}
}

func TestParseQueryRefuses(t *testing.T) {
	for _, c := range []struct {
		list  store.List
		query string
	}{
		{store.IPAddresses, "format=xml"}, {store.CalledNumbers, "format=nft"}, {store.CalledNumbers, "format=ipset"},
		{store.IPAddresses, "min_count=-1"}, {store.IPAddresses, "min_count=x"}, {store.IPAddresses, "verified=maybe"},
		{store.IPAddresses, "source=friends"}, {store.IPAddresses, "ttl=-5s"}, {store.IPAddresses, "ttl=forever"},
		{store.IPAddresses, "ttl=9999999999"}, {store.IPAddresses, "since=yesterday"},
		{store.IPAddresses, "format=nft&table=x%3Bflush%20ruleset"}, {store.IPAddresses, "format=ipset&set4=" + strings.Repeat("a", 40)},
		{store.IPAddresses, "format=nft&table=ip"}, {store.IPAddresses, "format=nft&set4=timeout"}, {store.IPAddresses, "format=ipset&set4=a&set6=a"},
		{store.IPAddresses, "format=ipset&set4=a.b"},
	} {
		v, _ := url.ParseQuery(c.query)
		if _, err := ParseQuery(c.list, v, now); err == nil {
			t.Errorf("%s: no error", c.query)
		}
	}
}

// TestScriptsLoad feeds the ipset and nft scripts to the real tools, in a network namespace
// of the test's own.
func TestScriptsLoad(t *testing.T) {
	ns := testutil.NewNetns(t, "feed")
	s := fixture(t)
	render := func(query string) string {
		v, _ := url.ParseQuery(query)
		q, err := ParseQuery(store.IPAddresses, v, now)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := Render(context.Background(), &b, s, q, guards(t), time.Now(), nil); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	// A row no capture writes, but a hand-edited database might: it must never reach a script.
	evil := &event.Event{AppName: event.AppName, Timestamp: event.FormatTime(time.Now()), UUID: "00000000-0000-4000-8000-000000000666",
		Transport: event.TCP, SourceIP: "2a02::1%x }\nadd rule inet filter input accept\nadd element inet dialtrap blocklist6 { 2a02::2", SourceVerified: true}
	if err := s.Write(context.Background(), []*event.Event{evil}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"nft", "ipset", "plain", "csv", "json"} {
		if out := render("format=" + f); strings.Contains(out, "accept") || strings.Contains(out, "2a02::") {
			t.Errorf("%s feed carries a malformed key:\n%s", f, out)
		}
	}
	// ipset refuses timeouts beyond 24.8 days, and restore stops at the first refusal: the
	// script caps them, and swaps its sets in only at the end.
	// Sets the agent made (dialtrap block --ipset) take the script as they are.
	ns.Run(t, "", "ipset", "create", "dialtrap4", "hash:ip", "family", "inet", "hashsize", "1024", "maxelem", "1048576", "timeout", "0")
	ns.Run(t, render("format=ipset&ttl=720h"), "ipset", "restore", "-exist")
	// Loaded twice: the scripts replace what they loaded before.
	for range 2 {
		ns.Run(t, render("format=nft&ttl=24h"), "nft", "-f", "-")
		ns.Run(t, render("format=ipset"), "ipset", "restore", "-exist")
	}
	out := ns.Run(t, "", "nft", "list", "table", "inet", "dialtrap")
	for _, want := range []string{"45.134.26.1 timeout", "2a0e:8f02:21c0::7 timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("nft set lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "91.92.240.3") || strings.Contains(out, "10.9.9.9") {
		t.Errorf("nft set holds an unverified or protected address:\n%s", out)
	}
	out = ns.Run(t, "", "ipset", "list", "dialtrap4")
	if !strings.Contains(out, "45.134.26.1") || !strings.Contains(out, "80.94.95.200") || strings.Count(out, "\n45.134.26.1") != 1 {
		t.Errorf("ipset dialtrap4:\n%s", out)
	}
}

// readMsgs reads stream lines until one with op stop arrives.
func readMsgs(t *testing.T, r *bufio.Reader, stop string) []Msg {
	t.Helper()
	var out []Msg
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("stream ended before %s: %v (read %v)", stop, err, out)
		}
		var m Msg
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, m)
		if m.Op == stop {
			return out
		}
	}
}

func ops(ms []Msg) string {
	var b []string
	for _, m := range ms {
		if m.IP != "" {
			b = append(b, m.Op+" "+m.IP)
		} else {
			b = append(b, m.Op)
		}
	}
	return strings.Join(b, ", ")
}

func TestStream(t *testing.T) {
	s := fixture(t)
	clock := now
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	nowFn := func() time.Time { <-mu; defer func() { mu <- struct{}{} }(); return clock }
	setClock := func(t time.Time) { <-mu; clock = t; mu <- struct{}{} }
	q, err := ParseQuery(store.IPAddresses, url.Values{"ttl": {"1h"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	start := func(cursor string) (*bufio.Reader, func()) {
		pr, pw := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Serve(ctx, pw, s, StreamOptions{Query: q, Cursor: cursor, Guards: guards(t), Now: nowFn,
				Poll: 5 * time.Millisecond, ExpiryEvery: 5 * time.Millisecond, Heartbeat: 20 * time.Millisecond})
			pw.Close()
		}()
		return bufio.NewReader(pr), func() {
			cancel()
			go io.Copy(io.Discard, pr)
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	}
	r, stop := start("")
	first := readMsgs(t, r, OpSync)
	// Within the hour, verified, not protected: the IPv6 one is 2 h old, 185.53.88.4 dialled 911
	// (the number is protected, not the address).
	if got := ops(first); got != "add 185.53.88.4, add 45.134.26.1, sync" {
		t.Fatalf("first set: %s", got)
	}
	if first[1].Timeout != 50*60 || !first[2].Full {
		t.Errorf("timeout %d full %v, want 3000 s left of 45.134.26.1's hour and a full sync", first[1].Timeout, first[2].Full)
	}
	if hb := readMsgs(t, r, OpHeartbeat); len(hb) != 1 || hb[0].Cursor == "" {
		t.Errorf("idle stream: %v, want a heartbeat with a cursor", hb)
	}
	// A new verified source appears; another goes stale as the clock passes its hour.
	ev := &event.Event{AppName: event.AppName, Timestamp: event.FormatTime(now.Add(time.Second)),
		UUID: "00000000-0000-4000-8000-000000000100", CollectedMethod: event.Responsive, Transport: event.TCP,
		SourceIP: "193.32.162.5", DestinationIP: "198.51.100.1", CalledNumber: "0046812118532", SourceVerified: true}
	if err := s.Write(context.Background(), []*event.Event{ev}); err != nil {
		t.Fatal(err)
	}
	got := readMsgs(t, r, OpCursor)
	if ops(got) != "add 193.32.162.5, cursor" || got[0].Timeout != 3600 { // stamped a second ahead: the TTL, no more
		t.Errorf("after a write: %s (timeout %d)", ops(got), got[0].Timeout)
	}
	cursor := got[len(got)-1].Cursor
	stop()

	// Reconnect from the cursor 52 minutes later: 45.134.26.1 (10 min old then) has expired
	// meanwhile, 185.53.88.4 (5 min old) not; nothing is sent again.
	setClock(now.Add(52 * time.Minute))
	r, stop = start(cursor)
	if got := ops(readMsgs(t, r, OpSync)); got != "del 45.134.26.1, sync" {
		t.Errorf("resumed: %s", got)
	}
	setClock(now.Add(61 * time.Minute))
	if got := ops(readMsgs(t, r, OpCursor)); got != "del 185.53.88.4, del 193.32.162.5, cursor" {
		t.Errorf("expiries as the clock passes: %s", got)
	}
	stop()

	// A cursor of another database, from the future, or of other filters gets the whole set.
	parts := strings.Split(cursor, ".")
	for _, c := range []string{"1.0.0.0", "garbage", fmt.Sprintf("%s.999.%d.%s", parts[0], now.UnixMilli(), parts[3]),
		strings.Join(append(parts[:3:3], "12345"), "."), strings.Join(parts[:3], ".")} {
		setClock(now)
		r, stop = start(c)
		if got := readMsgs(t, r, OpSync); !got[len(got)-1].Full || len(got) != 4 {
			t.Errorf("cursor %q: %s, want the whole set again", c, ops(got))
		}
		stop()
	}
}

// FuzzIPGuard checks the merged ranges against the plain definition: an address is
// protected when a prefix contains it.
func FuzzIPGuard(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 8, 192, 168, 1, 0, 24}, []byte{10, 1, 2, 3})
	f.Add([]byte{0x20, 1, 0xd, 0xb8, 32, 45, 0, 0, 0, 31}, []byte{45, 1, 2, 3})
	f.Fuzz(func(t *testing.T, spec, probe []byte) {
		var prefixes []netip.Prefix
		for len(spec) >= 5 { // four bytes of an IPv4 address or of an IPv6 one's start, and the length
			var a netip.Addr
			if spec[0]&1 == 0 {
				a = netip.AddrFrom4([4]byte(spec[:4]))
			} else {
				var b [16]byte
				copy(b[:], spec[:4])
				a = netip.AddrFrom16(b)
			}
			p, err := a.Prefix(int(spec[4]) % (a.BitLen() + 1))
			if err == nil {
				prefixes = append(prefixes, p)
			}
			spec = spec[5:]
		}
		var g IPGuard
		for _, p := range prefixes {
			g.Add(p)
		}
		var a netip.Addr
		switch len(probe) {
		case 4:
			a = netip.AddrFrom4([4]byte(probe))
		case 16:
			a = netip.AddrFrom16([16]byte(probe))
		default:
			return
		}
		want := false
		for _, p := range prefixes {
			want = want || p.Contains(a.Unmap())
		}
		if got := g.Protects(a); got != want {
			t.Fatalf("%s in %v: %v, want %v", a, prefixes, got, want)
		}
	})
}

// FuzzFeedQuery: no query string or cursor a client sends panics; a valid query's names stay
// safe to paste into a script; a cursor reads back as written.
func FuzzFeedQuery(f *testing.F) {
	for _, s := range []string{"format=nft&ttl=24h&table=edge", "format=ipset&set4=a&set6=b&verified=any", "source=all&min_count=3&since=24h",
		"format=csv&ttl=999999999999", "table=x%3Bflush%20ruleset&format=nft"} {
		f.Add(s, "123.456.1700000000000.42")
	}
	f.Fuzz(func(t *testing.T, query, cursor string) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		for _, l := range []store.List{store.IPAddresses, store.CalledNumbers} {
			q, err := ParseQuery(l, v, now)
			if err != nil {
				continue
			}
			for _, name := range []string{q.Table, q.Set4, q.Set6} {
				if !setName.MatchString(name) {
					t.Fatalf("unsafe name %q accepted", name)
				}
			}
			if q.TTL < 0 || q.TTL > MaxTTL || q.Filter.MinCount < 0 {
				t.Fatalf("out of range: %+v", q)
			}
		}
		if c, ok := ParseCursor(cursor); ok {
			if c2, ok2 := ParseCursor(c.String()); !ok2 || c2 != c {
				t.Fatalf("cursor %q reads back as %+v %v, was %+v", c.String(), c2, ok2, c)
			}
		}
	})
}

// countingSource counts the change-sequence reads of a store.
type countingSource struct {
	*sqlite.Store
	reads atomic.Int64
}

func (c *countingSource) ChangeSeq(ctx context.Context) (int64, int64, error) {
	c.reads.Add(1)
	return c.Store.ChangeSeq(ctx)
}

// With a Watcher, twenty idle streams cost one sequence read a poll, not twenty; a write
// still reaches every one of them.
func TestWatcherSharesThePolling(t *testing.T) {
	src := &countingSource{Store: fixture(t)}
	w := NewWatcher(src, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); w.Run(ctx) }()
	q, _ := ParseQuery(store.IPAddresses, url.Values{"verified": {"any"}}, now)
	const streams = 20
	got := make(chan string, streams)
	var wg sync.WaitGroup
	for range streams {
		pr, pw := io.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			Serve(ctx, pw, src, StreamOptions{Query: q, Guards: guards(t), Changes: w, Heartbeat: time.Hour, Now: func() time.Time { return now }})
			pw.Close()
		}()
		go func() {
			r := bufio.NewReader(pr)
			readMsgs(t, r, OpSync)
			adds := readMsgs(t, r, OpCursor)
			got <- ops(adds)
			io.Copy(io.Discard, pr)
		}()
	}
	time.Sleep(500 * time.Millisecond) // 25 polls
	before := src.reads.Load()
	if before > streams+30 {
		t.Errorf("%d sequence reads for %d streams in 25 polls: the polling is not shared", before, streams)
	}
	src.Write(context.Background(), []*event.Event{{AppName: event.AppName, Timestamp: event.FormatTime(now),
		UUID: "00000000-0000-4000-8000-000000000200", Transport: event.TCP, SourceIP: "193.32.162.9", SourceVerified: true}})
	for range streams {
		select {
		case g := <-got:
			if g != "add 193.32.162.9, cursor" {
				t.Errorf("a stream got %s", g)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stream was not woken by the write")
		}
	}
	cancel()
	wg.Wait()
	<-watched
}

// With no stream open the watcher asks the store nothing; the first stream starts the
// polling and the last one's end stops it.
func TestWatcherIdleWithoutStreams(t *testing.T) {
	src := &countingSource{Store: fixture(t)}
	synctest.Test(t, func(t *testing.T) {
		w := NewWatcher(src, 250*time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.Run(ctx)
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := src.reads.Load(); n != 0 {
			t.Fatalf("%d sequence reads in an hour with no stream", n)
		}
		done := w.Watch()
		time.Sleep(time.Second)
		synctest.Wait()
		if n := src.reads.Load(); n < 4 {
			t.Fatalf("%d sequence reads in a second with a stream, want one a poll", n)
		}
		if e, _, _, err := w.Current(); e == 0 || err != nil {
			t.Fatalf("no sequence read for the stream (epoch %d, %v)", e, err)
		}
		done()
		time.Sleep(time.Second) // the poll under way ends
		synctest.Wait()
		before := src.reads.Load()
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := src.reads.Load() - before; n != 0 {
			t.Fatalf("%d sequence reads in an hour after the last stream ended", n)
		}
		if e, _, _, _ := w.Current(); e != 0 {
			t.Errorf("epoch %d kept after the last stream ended; a new stream would trust a stale read", e)
		}
	})
}
