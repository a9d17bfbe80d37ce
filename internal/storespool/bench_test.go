package storespool

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// The cost of the spool against the store it stands in for, per event, in batches of 1000
// scanner INVITEs (about 600 bytes of JSON each):
//
//	Spool:  Write while the store is down: encode and append to the spool (the outage's cost)
//	SQLite: the same batches written to an SQLite store (the direct path's cost, as a yardstick;
//	        a PostgreSQL write adds a network round trip or more)
//	Replay: spooled events read back, decoded, written to a store that takes everything, acked
func BenchmarkSpool(b *testing.B) {
	const batch = 1000
	batches := func(n int) [][]*event.Event {
		out := make([][]*event.Event, n)
		for i := range out {
			out[i] = makeEvents(batch)
		}
		return out
	}
	b.Run("Spool", func(b *testing.B) {
		db := newStore()
		db.down = true
		s, err := New(db, Config{Dir: filepath.Join(b.TempDir(), "spool"), MaxBytes: 1 << 40})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close(context.Background())
		in := batches(16)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if err := s.Write(context.Background(), in[i%len(in)]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
	})
	b.Run("SQLite", func(b *testing.B) {
		st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "db.sqlite"))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			in := makeEvents(batch) // new event_uuids: the store writes each once
			b.StartTimer()
			if err := st.Write(context.Background(), in); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
	})
	b.Run("Replay", func(b *testing.B) {
		db := nullStore{}
		s, err := New(db, Config{Dir: filepath.Join(b.TempDir(), "spool"), MaxBytes: 1 << 40})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close(context.Background())
		in := batches(16)
		for i := range b.N {
			s.mu.Lock()
			if _, err := s.append(in[i%len(in)]); err != nil {
				b.Fatal(err)
			}
			s.mu.Unlock()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for {
			recs, events, err := s.read()
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			if err := db.Write(context.Background(), events); err != nil {
				b.Fatal(err)
			}
			if err := s.spool.Ack(recs...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
	})
}

type nullStore struct{}

func (nullStore) Name() string                                { return "null" }
func (nullStore) Write(context.Context, []*event.Event) error { return nil }
