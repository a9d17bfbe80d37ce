package postgres

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// scan returns n probes of a scan in time order: 64 sources, 1000 numbers.
func scan(n, from int) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		k := from + i
		out[i] = ev(time.Duration(k)*time.Millisecond, fmt.Sprintf("198.51.%d.%d", k%64/256, k%64), fmt.Sprintf("0046812%06d", k%1000))
	}
	return out
}

// BenchmarkWrite writes batches of 1000 probes (the hub's batches under load are up to 5000)
// to PostgreSQL (the test server: fsync off) and to SQLite, in the same run.
func BenchmarkWrite(b *testing.B) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		open func(b *testing.B) interface {
			Write(context.Context, []*event.Event) error
		}
	}{
		{"postgres", func(b *testing.B) interface {
			Write(context.Context, []*event.Event) error
		} {
			s := open(b)
			s.SetLabeler(intel.NewLabeler(""))
			return s
		}},
		{"sqlite", func(b *testing.B) interface {
			Write(context.Context, []*event.Event) error
		} {
			s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			s.SetLabeler(intel.NewLabeler(""))
			return s
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := c.open(b)
			const batch = 1000
			batches := make([][]*event.Event, b.N)
			for i := range batches {
				batches[i] = scan(batch, i*batch)
			}
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if err := s.Write(ctx, batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkLookup compares a lookup that finds its key, one that does not (what a PBX asks
// most), and a bare SELECT 1 on the same pool, on a store of 20,000 IPs.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	s := open(b)
	for i := range 20 {
		if err := s.Write(ctx, scanIPs(1000, i*1000)); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		fn   func(i int) error
	}{
		{"hit", func(i int) error {
			_, ok, err := s.IP(ctx, ipOf(i%20000))
			if !ok && err == nil {
				err = fmt.Errorf("%s not found", ipOf(i%20000))
			}
			return err
		}},
		{"miss", func(i int) error {
			_, ok, err := s.IP(ctx, fmt.Sprintf("203.0.113.%d", i%256))
			if ok {
				err = fmt.Errorf("found")
			}
			return err
		}},
		{"select1", func(int) error {
			var one int
			return s.pool.QueryRow(ctx, `SELECT 1`).Scan(&one)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				if err := c.fn(i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ipOf(k int) string { return fmt.Sprintf("10.%d.%d.%d", k>>16&255, k>>8&255, k&255) }

// scanIPs returns n probes from n sources.
func scanIPs(n, from int) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		out[i] = ev(time.Duration(from+i)*time.Millisecond, ipOf(from+i), "100")
	}
	return out
}
