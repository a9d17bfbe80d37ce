// Command stats measures the analytic routes (/stats/*, /campaigns) of a node whose store
// holds millions of events, against a bare net/http handler in the same run. The goal is
// every route under 100 ms on 10 million events. See bench/README.md.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

func main() {
	var (
		bin    = flag.String("bin", "./bin/dialtrap", "dialtrap binary")
		dir    = flag.String("dir", filepath.Join(os.TempDir(), "dialtrap-bench-stats"), "data directory (seeded once, reused)")
		events = flag.Int("events", 10_000_000, "events in the store")
		days   = flag.Int("days", 30, "the events span this many days up to now")
		reps   = flag.Int("reps", 21, "requests per route")
		bare   = flag.String("bare", "", "internal: run as the bare handler on this address")
	)
	flag.Parse()
	if *bare != "" {
		http.ListenAndServe(*bare, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"tools_total": 1, "tools": [{"tool": "sipvicious", "seen_count": "1"}]}`)
		}))
		return
	}
	if err := run(*bin, *dir, *events, *days, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "stats:", err)
		os.Exit(1)
	}
}

// The attack history: scanners (one tool each) send runs of probes; numbers are international
// targets dialled behind the prefixes scans try.
var (
	tools    = []string{"sipvicious", "sipvicious", "sipvicious", "sipvicious", "sipvicious", "sipvicious", "sipp", "sipp", "sipsak", "sipcli", ""}
	agents   = map[string]string{"sipvicious": "friendly-scanner", "sipp": "SIPp/Linux", "sipsak": "sipsak 0.9.8.1", "sipcli": "sipcli/v1.8", "": "pplsip"}
	spoofs   = []string{"Cisco-SIPGateway/IOS-12.x", "PolycomSoundPointIP-SPIP_550-UA/3.3.2.0472", "Asterisk PBX 16.2.1", "Zoiper rv2.10.11.6"}
	prefixes = []string{"", "00", "000", "9011", "900", "+", "011", "9", "0"}
	codes    = []string{"44", "49", "33", "1", "972", "882", "7", "880", "63", "234", "970", "53", "231", "252", "375"}
	methods  = []string{"INVITE", "INVITE", "INVITE", "INVITE", "INVITE", "REGISTER", "REGISTER", "REGISTER", "OPTIONS", "OPTIONS"}
)

const (
	sources = 20_000 // distinct scanner addresses
	targets = 5_000  // distinct numbers called
	runLen  = 500    // probes a campaign
)

// source is the i-th scanner's public IPv4 address, spread over the address space (so over
// many countries), never private or reserved.
func source(i int) string {
	h := fnv.New32a()
	binary.Write(h, binary.LittleEndian, uint32(i))
	v := h.Sum32()
	for {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v)
		a := netip.AddrFrom4(b)
		if a.IsGlobalUnicast() && !a.IsPrivate() && b[0] < 224 && b[0] != 100 && b[0] != 127 && b[0] != 0 {
			return a.String()
		}
		v = v*2654435761 + 1
	}
}

func seed(path string, n, days int) error {
	ctx := context.Background()
	if st, err := sqlite.OpenReadOnly(ctx, path); err == nil {
		have, err := st.CountEvents(ctx)
		st.Close()
		if err == nil && have == int64(n) {
			fmt.Printf("store: reusing %s (%d events)\n", path, have)
			return nil
		}
	}
	os.RemoveAll(filepath.Dir(path))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetLabeler(intel.NewLabeler(""))
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	base := start.Add(-time.Duration(days) * 24 * time.Hour)
	step := time.Duration(days) * 24 * time.Hour / time.Duration(n)
	batch := make([]*event.Event, 0, 5000)
	var src, tool, agent string
	for i := range n {
		if i%runLen == 0 {
			src = source(rng.IntN(sources))
			tool = tools[rng.IntN(len(tools))]
			agent = agents[tool]
			if tool == "sipvicious" && rng.IntN(10) == 0 {
				agent = spoofs[rng.IntN(len(spoofs))]
			}
		}
		t := rng.IntN(targets)
		num := prefixes[rng.IntN(len(prefixes))] + codes[t%len(codes)] + fmt.Sprintf("%09d", 100000000+t*7919%900000000)
		method := methods[rng.IntN(len(methods))]
		e := event.New(event.Origin{AppVersion: "bench", NodeID: "bench", Method: event.Responsive, Transport: event.UDP,
			Source: netip.AddrPortFrom(netip.MustParseAddr(src), 5070), Dest: netip.MustParseAddrPort("192.0.2.1:5060")},
			base.Add(time.Duration(i)*step), num, method, agent,
			[]byte(method+" sip:"+num+"@192.0.2.1 SIP/2.0\r\nUser-Agent: "+agent+"\r\n\r\n"))
		e.Tool, e.UASpoofed = tool, agent != agents[tool]
		if rng.IntN(200) == 0 {
			e.Payload = []event.Payload{{Kind: "sqli", Where: "to"}}
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == n-1 {
			if err := st.Write(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
		if i > 0 && i%1_000_000 == 0 {
			fmt.Printf("store: %d events written, %s\n", i, time.Since(start).Round(time.Second))
		}
	}
	fmt.Printf("store: seeded %d events in %s\n", n, time.Since(start).Round(time.Second))
	return nil
}

func run(bin, dir string, n, days, reps int) error {
	if err := seed(filepath.Join(dir, "dialtrap.db"), n, days); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(dir, "dialtrap.db")); err == nil {
		fmt.Printf("store: %d MiB\n", fi.Size()>>20)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bareAddr := freeAddr()
	bare := exec.Command(self, "-bare", bareAddr)
	if err := bare.Start(); err != nil {
		return err
	}
	defer bare.Process.Kill()
	nodeAddr := freeAddr()
	node := exec.Command(bin, "-R", "-a", "--api-addr", nodeAddr, "--data-dir", dir)
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		return err
	}
	defer node.Process.Kill()
	for _, u := range []string{"http://" + bareAddr + "/", "http://" + nodeAddr + "/health-check"} {
		if err := waitReady(u, 120*time.Second); err != nil {
			return fmt.Errorf("%s: %w", u, err)
		}
	}
	routes := []string{
		"/stats", "/stats?since=24h", "/stats/tools", "/stats/tools?since=24h", "/stats/countries",
		"/stats/countries?since=24h", "/stats/prefixes", "/stats/numbers", "/stats/numbers?since=24h",
		"/stats/payloads", "/stats/target-countries", "/stats/targets", "/stats/targets?fresh=24h",
		"/stats/timeline?step=1m", "/stats/timeline?step=1h&since=720h", "/stats/timeline?step=1d&since=720h",
		"/campaigns", "/campaigns?since=24h", "/sip-methods", "/user-agents",
	}
	fmt.Printf("\n%d requests a route, one at a time; median and slowest\n", reps)
	fmt.Printf("%-38s %10s %10s %9s\n", "route", "median", "max", "x bare")
	bareMed, _, err := measure("http://"+bareAddr+"/stats/tools", reps)
	if err != nil {
		return err
	}
	fmt.Printf("%-38s %10s %10s %9s\n", "bare net/http handler", bareMed.Round(time.Microsecond), "", "1")
	var worst time.Duration
	var worstRoute string
	for _, r := range routes {
		med, mx, err := measure("http://"+nodeAddr+r, reps)
		if err != nil {
			return err
		}
		if mx > worst {
			worst, worstRoute = mx, r
		}
		fmt.Printf("%-38s %10s %10s %9.0f\n", r, med.Round(time.Microsecond), mx.Round(time.Microsecond), float64(med)/float64(bareMed))
	}
	fmt.Printf("\nslowest answer: %s (%s); goal < 100ms on %d events\n", worst.Round(time.Microsecond), worstRoute, n)
	node.Process.Signal(syscall.SIGTERM)
	node.Wait()
	return nil
}

// measure asks url reps times and returns the median and the slowest time to the whole body.
func measure(url string, reps int) (med, mx time.Duration, err error) {
	var ds []time.Duration
	for range reps {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			return 0, 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("%s: %s", url, resp.Status)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1], nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(url string, limit time.Duration) error {
	start := time.Now()
	for time.Since(start) < limit {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("not answering")
}
