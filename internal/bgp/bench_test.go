package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/packet/mrt"

	"github.com/dialtrap/dialtrap/internal/firewall"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// benchAddrs are n distinct IPv4 host addresses (from 45.0.0.0/8: BIRD takes them as routes).
func benchAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range n {
		out[i] = netip.AddrFrom4([4]byte{45, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	return out
}

// waitCount polls the router until it holds want routes; it returns when that happened.
func waitCount(b *testing.B, r *testutil.Bird, want int, within time.Duration) time.Time {
	deadline := time.Now().Add(within)
	for {
		if r.Count() == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			b.Fatalf("the router holds %d routes, not %d, after %s", r.Count(), want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkAnnounce100k measures the time from handing 100,000 blocked addresses to the
// speaker (in the firewall agent's batches of 10,000) until a real BIRD holds them all, and,
// in the same run, the time gobgpd takes to bring BIRD the same set injected with its own
// CLI (gobgp mrt inject global). Run it with -benchtime=1x: each iteration is seconds long.
//
//	go test -run '^$' -bench Announce100k -benchtime 1x ./internal/bgp
func BenchmarkAnnounce100k(b *testing.B) {
	const n = 100000
	for _, tool := range []string{"gobgpd", "gobgp", "bird"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s not installed (scripts/test-deps.sh installs it): %v", tool, err)
		}
	}
	addrs := benchAddrs(n)
	mrtFile := writeMRT(b, addrs)
	var ours, base time.Duration
	for range b.N {
		ours += announceOurs(b, addrs)
		base += announceGoBGPd(b, mrtFile, n)
	}
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ms/100k")
	b.ReportMetric(float64(base.Milliseconds())/float64(b.N), "gobgpd-ms/100k")
	b.ReportMetric(float64(ours)/float64(base), "x-gobgpd")
}

func announceOurs(b *testing.B, addrs []netip.Addr) time.Duration {
	r := testutil.StartBird(b, testutil.BirdOptions{ASN: 65001, PeerASN: 65000})
	s, err := New(Config{ASN: 65000, RouterID: netip.MustParseAddr("127.0.0.1"), MaxPrefixes: len(addrs), ConnectRetry: time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr(r.Addr), ASN: 65001, Port: uint16(r.Port)}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Ensure(ctx)
	r.WaitFor("the session", 20*time.Second, r.Established)
	els := make([]firewall.Element, len(addrs))
	for i, a := range addrs {
		els[i] = firewall.Element{Addr: a, Timeout: time.Hour}
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < len(els); i += 10000 {
		if err := s.Add(ctx, els[i:min(i+10000, len(els))]); err != nil {
			b.Fatal(err)
		}
	}
	added := time.Since(start)
	done := waitCount(b, r, len(addrs), 5*time.Minute)
	b.StopTimer()
	b.Logf("speaker: Add of %d took %s; BIRD held them all %s after the first Add", len(addrs), added.Round(time.Millisecond), done.Sub(start).Round(time.Millisecond))
	return done.Sub(start)
}

// writeMRT writes addrs as an MRT TABLE_DUMPv2 file with the speaker's attributes, for
// gobgp mrt inject.
func writeMRT(b *testing.B, addrs []netip.Addr) string {
	path := filepath.Join(b.TempDir(), "blackhole.mrt")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	now := time.Now()
	id := netip.MustParseAddr("127.0.0.1")
	write := func(st mrt.MRTSubTypeTableDumpv2, body mrt.Body) {
		m, err := mrt.NewMRTMessage(now, mrt.TABLE_DUMPv2, st, body)
		if err != nil {
			b.Fatal(err)
		}
		buf, err := m.Serialize()
		if err != nil {
			b.Fatal(err)
		}
		f.Write(buf)
	}
	write(mrt.PEER_INDEX_TABLE, mrt.NewPeerIndexTable(id, "", []*mrt.Peer{mrt.NewPeer(id, id, 65000, true)}))
	nh, _ := bgp.NewPathAttributeNextHop(DefaultNextHop4)
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeAsPath(nil), nh,
		bgp.NewPathAttributeCommunities([]uint32{CommunityBlackhole, CommunityNoExport})}
	for i, a := range addrs {
		nlri, _ := bgp.NewIPAddrPrefix(netip.PrefixFrom(a, 32))
		write(mrt.RIB_IPV4_UNICAST, mrt.NewRib(uint32(i), bgp.RF_IPv4_UC, nlri,
			[]*mrt.RibEntry{mrt.NewRibEntry(0, uint32(now.Unix()), 0, attrs, false)}))
	}
	return path
}

var reDest = regexp.MustCompile(`Destination: (\d+)`)

// gobgpdCount is how many IPv4 routes gobgpd's RIB holds, once it stops growing.
func gobgpdCount(b *testing.B, grpc int) int {
	last := -1
	for {
		out, err := exec.Command("gobgp", "-p", fmt.Sprint(grpc), "global", "rib", "summary").CombinedOutput()
		m := reDest.FindSubmatch(out)
		if err != nil || m == nil {
			b.Fatalf("gobgp global rib summary: %v: %s", err, out)
		}
		n, _ := strconv.Atoi(string(m[1]))
		if n == last {
			return n
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
}

func announceGoBGPd(b *testing.B, mrtFile string, n int) time.Duration {
	r := testutil.StartBird(b, testutil.BirdOptions{ASN: 65001, PeerASN: 65000})
	dir := b.TempDir()
	grpc := testutil.FreePort(b, "127.0.0.1")
	conf := fmt.Sprintf(`[global.config]
  as = 65000
  router-id = "127.0.0.1"
  port = -1
[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.0.2"
    peer-as = 65001
  [neighbors.transport.config]
    remote-port = %d
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
`, r.Port)
	cf := filepath.Join(dir, "gobgpd.toml")
	os.WriteFile(cf, []byte(conf), 0o644)
	d := exec.Command("gobgpd", "-f", cf, "-l", "warn", "--api-hosts", fmt.Sprintf("127.0.0.1:%d", grpc), "--pprof-disable")
	out := &testutil.SyncBuffer{}
	d.Stdout, d.Stderr = out, out
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		d.Process.Kill()
		d.Wait()
	}()
	r.WaitFor("gobgpd's session", 20*time.Second, r.Established)
	b.StartTimer()
	start := time.Now()
	inject := exec.Command("gobgp", "-p", fmt.Sprint(grpc), "mrt", "inject", "global", mrtFile)
	if o, err := inject.CombinedOutput(); err != nil {
		b.Fatalf("gobgp mrt inject: %v\n%s\ngobgpd: %s", err, o, out.String())
	}
	injected := time.Since(start)
	// The CLI loses a few hundred of the last paths of a large inject (0.1-0.3% here: its
	// stream ends before gobgpd has taken them); the baseline is the time until BIRD holds
	// what gobgpd accepted.
	held := gobgpdCount(b, grpc)
	done := waitCount(b, r, held, 5*time.Minute)
	b.StopTimer()
	b.Logf("gobgpd: mrt inject of %d took %s; gobgpd accepted %d; BIRD held them all %s after the inject started",
		n, injected.Round(time.Millisecond), held, done.Sub(start).Round(time.Millisecond))
	return done.Sub(start)
}
