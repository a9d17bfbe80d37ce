package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/client"
)

// BenchmarkSDKvsRaw looks up the same known number through the SDK and through a raw
// net/http client doing the same GET (token, status check, JSON decode), on the same
// in-process node over a real SQLite store, at the same concurrency. Compare their
// lookups/s: the SDK's aim is at least 0.9 of the raw client's.
//
//	go test -run '^$' -bench SDKvsRaw -count 3 ./client/
func BenchmarkSDKvsRaw(b *testing.B) {
	n := startNode(b, nil, nil)
	transport := func() *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}}
	}
	const number = "0046812345678"
	b.Run("sdk", func(b *testing.B) {
		c := client.New(n.url, client.WithToken(token), client.WithHTTPClient(transport()))
		run(b, func(ctx context.Context) bool {
			l, err := c.Number(ctx, number, client.WithMatch(client.MatchExact))
			return err == nil && l.Known
		})
	})
	b.Run("raw", func(b *testing.B) {
		hc := transport()
		url := n.url + "/numbers/" + number + "?match=exact"
		run(b, func(ctx context.Context) bool {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				return false
			}
			var doc struct {
				Found     string `json:"phone_number_found"`
				SeenFirst string `json:"seen_first"`
				SeenLast  string `json:"seen_last"`
				SeenCount string `json:"seen_count"`
			}
			return json.Unmarshal(body, &doc) == nil && doc.Found != ""
		})
	})
}

func run(b *testing.B, lookup func(context.Context) bool) {
	b.SetParallelism(4) // 4 × GOMAXPROCS callers, as a PBX with calls in flight
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if !lookup(ctx) {
				b.Error("lookup failed")
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
}
