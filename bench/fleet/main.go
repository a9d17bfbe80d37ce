// Command fleet measures a store shared by a fleet: writers on many nodes at once, and the
// lookup a PBX makes on every call while they write. It runs each store named by -stores the
// same way, in one run on one machine, so their figures compare:
//
//  1. seed: the store is filled with -events events (from -ips sources dialling -numbers
//     numbers) unless it already holds them (seeding 10 million takes minutes; the store is
//     kept for later runs);
//  2. load: -writers writers, each its own store handle (a node of the fleet: its own pool
//     for PostgreSQL; SQLite's single writer serialises them, as one node's hub does), each
//     write -rate events/s in batches every 100 ms for -duration;
//  3. meanwhile one goroutine looks up IPs and numbers without pause, half hits, half misses,
//     and the latency of each is recorded.
//
// It reports the rate the writers achieved and the lookups' p50, p99 and max, and, as the
// baseline for the lookups, the same lookups with no writer running.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/postgres"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// Store is what the benchmark uses of a backend.
type Store interface {
	Write(ctx context.Context, batch []*event.Event) error
	IP(ctx context.Context, ip string) (store.Aggregate, bool, error)
	Number(ctx context.Context, n string) (store.Aggregate, bool, error)
	CountEvents(ctx context.Context) (int64, error)
	PrepareLookups()
	Close() error
}

// opener opens a store by its spec: sqlite:PATH, or a postgres:// URL.
type opener func(ctx context.Context, spec string) (Store, error)

var openers = map[string]opener{
	"sqlite": func(ctx context.Context, spec string) (Store, error) {
		return sqlite.Open(ctx, strings.TrimPrefix(spec, "sqlite:"))
	},
	"postgres": func(ctx context.Context, spec string) (Store, error) {
		return postgres.Open(ctx, spec)
	},
}

func open(ctx context.Context, spec string) (Store, error) {
	kind, _, _ := strings.Cut(spec, ":")
	if kind == "postgresql" {
		kind = "postgres"
	}
	o, ok := openers[kind]
	if !ok {
		return nil, fmt.Errorf("store %q: give sqlite:PATH or a postgres:// URL", config.RedactURL(spec))
	}
	return o(ctx, spec)
}

func main() {
	var (
		stores   = flag.String("stores", "sqlite:"+filepath.Join(os.TempDir(), "dialtrap-bench-fleet", "dialtrap.db"), "comma-separated stores to measure: sqlite:PATH, postgres://...")
		events   = flag.Int("events", 10_000_000, "events in the store before the load")
		ips      = flag.Int("ips", 200_000, "distinct source IPs of the seeded events")
		numbers  = flag.Int("numbers", 1_000_000, "distinct numbers of the seeded events")
		writers  = flag.Int("writers", 10, "writers (nodes) during the load")
		rate     = flag.Int("rate", 5000, "events/s each writer offers")
		duration = flag.Duration("duration", 30*time.Second, "load time")
	)
	flag.Parse()
	ctx := context.Background()
	fmt.Printf("fleet benchmark: %d events seeded (%d IPs, %d numbers); %d writers at %d events/s for %v; lookups half hits, half misses\n\n",
		*events, *ips, *numbers, *writers, *rate, *duration)
	fmt.Printf("%-10s | %11s | %9s %9s %9s | %9s %9s %9s\n", "store", "written/s", "idle p50", "p99", "max", "load p50", "p99", "max")
	for _, spec := range strings.Split(*stores, ",") {
		r, err := run(ctx, spec, *events, *ips, *numbers, *writers, *rate, *duration)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleet:", err)
			os.Exit(1)
		}
		fmt.Printf("%-10s | %11.0f | %9v %9v %9v | %9v %9v %9v\n", r.name, r.written,
			r.idle.p50, r.idle.p99, r.idle.max, r.load.p50, r.load.p99, r.load.max)
	}
}

type latencies struct{ p50, p99, max time.Duration }

type result struct {
	name       string
	written    float64
	idle, load latencies
}

func sourceIP(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff) }
func number(i int) string   { return strconv.Itoa(4_600_000_000 + 7*i) }

func probe(ts time.Time, ip, num string) *event.Event {
	return &event.Event{AppName: event.AppName, AppVersion: "bench", Timestamp: event.FormatTime(ts),
		UUID: uuid.Must(uuid.NewV7()).String(), NodeID: "0190f4a2-0000-7000-8000-000000000001",
		CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: ip, SourcePort: 5070,
		DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: num, SIPMethod: "INVITE",
		SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:" + num + "@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + ip +
			":5070;branch=z9hG4bK-1\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"}
}

func run(ctx context.Context, spec string, events, ips, numbers, writers, rate int, d time.Duration) (result, error) {
	kind, _, _ := strings.Cut(spec, ":")
	r := result{name: kind}
	if kind == "sqlite" {
		if err := os.MkdirAll(filepath.Dir(strings.TrimPrefix(spec, "sqlite:")), 0o750); err != nil {
			return r, err
		}
	}
	main, err := open(ctx, spec)
	if err != nil {
		return r, err
	}
	defer main.Close()
	if err := seed(ctx, main, events, ips, numbers); err != nil {
		return r, err
	}
	main.PrepareLookups()
	time.Sleep(2 * time.Second) // filters, caches warm
	r.idle = lookups(ctx, main, ips, numbers, 5*time.Second, nil)

	handles := []Store{main}
	if kind != "sqlite" { // a node of the fleet each; one SQLite file has one writer
		for range writers - 1 {
			h, err := open(ctx, spec)
			if err != nil {
				return r, err
			}
			defer h.Close()
			handles = append(handles, h)
		}
	}
	var written atomic.Int64
	var failed atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		h := handles[w%len(handles)]
		wg.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				batch := make([]*event.Event, rate/10)
				now := time.Now()
				for i := range batch {
					batch[i] = probe(now, sourceIP(rng.IntN(ips*2)), number(rng.IntN(numbers*2)))
				}
				if err := h.Write(ctx, batch); err != nil {
					failed.Store(err)
					return
				}
				written.Add(int64(len(batch)))
			}
		})
	}
	r.load = lookups(ctx, main, ips, numbers, d, stop)
	wg.Wait()
	r.written = float64(written.Load()) / time.Since(start).Seconds()
	if err, ok := failed.Load().(error); ok {
		return r, fmt.Errorf("%s: a writer failed: %w", kind, err)
	}
	return r, nil
}

// seed fills s up to n events.
func seed(ctx context.Context, s Store, n, ips, numbers int) error {
	have, err := s.CountEvents(ctx)
	if err != nil {
		return err
	}
	const batch = 5000
	base := time.Now().Add(-24 * time.Hour)
	began := time.Now()
	for i := int(have); i < n; i += batch {
		b := make([]*event.Event, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			b = append(b, probe(base.Add(time.Duration(j)*time.Millisecond), sourceIP(j%ips), number(j%numbers)))
		}
		if err := s.Write(ctx, b); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		if i/batch%200 == 0 {
			fmt.Fprintf(os.Stderr, "seeding: %d of %d events (%.0f/s)\n", i+len(b), n, float64(i+len(b)-int(have))/time.Since(began).Seconds())
		}
	}
	return nil
}

// lookups asks without pause for d (or until stop closes, when it closes it at d): IPs and
// numbers, half of them seeded, and returns the latency percentiles.
func lookups(ctx context.Context, s Store, ips, numbers int, d time.Duration, stop chan struct{}) latencies {
	var lat []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		hit := i%2 == 0
		t0 := time.Now()
		var err error
		switch {
		case i%4 < 2 && hit:
			_, _, err = s.IP(ctx, sourceIP(rng.IntN(ips)))
		case i%4 < 2:
			_, _, err = s.IP(ctx, "172.16."+strconv.Itoa(rng.IntN(256))+"."+strconv.Itoa(rng.IntN(256)))
		case hit:
			_, _, err = s.Number(ctx, number(rng.IntN(numbers)))
		default:
			_, _, err = s.Number(ctx, strconv.Itoa(9_100_000_000+rng.IntN(1_000_000)))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleet: lookup:", err)
			os.Exit(1)
		}
		lat = append(lat, time.Since(t0))
	}
	if stop != nil {
		close(stop)
	}
	slices.Sort(lat)
	pct := func(p int) time.Duration { return lat[min(len(lat)-1, len(lat)*p/100)] }
	return latencies{pct(50), pct(99), lat[len(lat)-1]}
}
