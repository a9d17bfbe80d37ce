package webhook

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The webhook benchmarks come in pairs, each against a baseline run the same way:
//
//	go test -run '^$' -bench . -benchtime 20000x ./internal/sink/webhook/
//
// Spool: Sink.Write (JSON encoding + one append per batch) against encoding and writing the
// same batches to a plain file, as the JSON log does. Deliver: events written, spooled and delivered by the workers, against the same number
// of POSTs of the same bodies from 4 goroutines with a plain net/http client.

func BenchmarkSpoolWrite(b *testing.B) {
	rv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer rv.Close()
	cfg := Config{URL: rv.URL, SpoolDir: filepath.Join(b.TempDir(), "spool"), SpoolMax: 1 << 40}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.openSpool(); err != nil { // no workers: this measures the capture side only
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	batch := makeEvents(1000, "0046812118532")
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		if err := s.Write(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBareFileAppend encodes and writes the same batches as the JSON log sink does,
// without the spool's bookkeeping.
func BenchmarkBareFileAppend(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "bare"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	batch := makeEvents(1000, "0046812118532")
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		var buf []byte
		for _, e := range batch {
			line, _ := e.MarshalLine()
			buf = append(buf, line...)
		}
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func benchServer(b *testing.B, n int) (*httptest.Server, *sync.WaitGroup) {
	var wg sync.WaitGroup
	wg.Add(n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
		wg.Done()
	}))
	b.Cleanup(srv.Close)
	return srv, &wg
}

func BenchmarkDeliver(b *testing.B) {
	srv, wg := benchServer(b, b.N)
	cfg := Config{URL: srv.URL, SpoolDir: filepath.Join(b.TempDir(), "spool"), SpoolMax: 1 << 40, Concurrency: 4}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	events := makeEvents(b.N, "0046812118532")
	b.ResetTimer()
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(events); i += 1000 {
		if err := s.Write(context.Background(), events[i:min(i+1000, len(events))]); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Close(ctx)
}

func BenchmarkBarePost(b *testing.B) {
	srv, wg := benchServer(b, b.N)
	bodies := make(chan []byte, b.N)
	for _, e := range makeEvents(b.N, "0046812118532") {
		body, _ := e.AppendJSON(nil)
		bodies <- body
	}
	close(bodies)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.ResetTimer()
	for range 4 {
		go func() {
			for body := range bodies {
				resp, err := client.Post(srv.URL, "application/json", bytes.NewReader(body))
				if err != nil {
					panic(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	client.CloseIdleConnections()
}
