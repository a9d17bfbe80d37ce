package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dialtrap/dialtrap/internal/hits"
)

type discardNotifier struct{}

func (discardNotifier) Name() string            { return "discard" }
func (discardNotifier) Notify(hits.Alert) error { return nil }

// BenchmarkLookupHits measures matching lookups (GET /numbers/100, a stored number) over
// loopback HTTP with keep-alive, with hit recording off and on (a started recorder with a
// notifier, so every hit also crosses the alert queue). The goal: recording costs at most
// 5% of the lookups a second.
//
//	go test -run '^$' -bench LookupHits -benchtime 3s -count 5 ./internal/api
func BenchmarkLookupHits(b *testing.B) {
	st := seed(b)
	for _, on := range []bool{false, true} {
		name := "off"
		cfg := Config{Store: st, Version: "1", Token: "bench-token"}
		if on {
			name = "on"
			rec := hits.New(hits.Config{Notifiers: []hits.Notifier{discardNotifier{}}})
			rec.Start()
			b.Cleanup(rec.Close)
			cfg.Hits = rec
		}
		b.Run(name, func(b *testing.B) {
			srv := httptest.NewServer(Handler(cfg))
			defer srv.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", srv.URL+"/numbers/100", nil)
				req.Header.Set("Authorization", "Bearer bench-token")
				for pb.Next() {
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
	}
}

// BenchmarkLookupHitsHandler is the same without the network: the handler alone, where
// the recording's share of the cost is largest.
func BenchmarkLookupHitsHandler(b *testing.B) {
	st := seed(b)
	for _, on := range []bool{false, true} {
		name := "off"
		cfg := Config{Store: st, Version: "1"}
		if on {
			name = "on"
			rec := hits.New(hits.Config{Notifiers: []hits.Notifier{discardNotifier{}}})
			rec.Start()
			b.Cleanup(rec.Close)
			cfg.Hits = rec
		}
		h := Handler(cfg)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", "/numbers/100", nil)
				for pb.Next() {
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
	}
}
