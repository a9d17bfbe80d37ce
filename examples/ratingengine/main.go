// Command ratingengine shows how a rating or billing engine asks dialtrap before it
// authorises a call: one lookup of the called number, national forms included, with a latency
// budget, failing open. It reads call attempts as lines on standard input ("CALLER CALLED",
// or "CALLED" alone) and prints a decision for each:
//
//	ALLOW 0046812345678 unknown (4.1ms)
//	DENY  +46812118532 known-bad: seen 12 times, last 2026-11-23 10:00 (3.2ms)
//	ALLOW 0046812345678 fail-open: context deadline exceeded (50.3ms)
//
// Usage:
//
//	go run ./examples/ratingengine -node http://127.0.0.1:8082 -token "$TOKEN" < calls.txt
//
// The token may also come from DIALTRAP_API_TOKEN.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/client"
)

func main() {
	node := flag.String("node", "http://127.0.0.1:8082", "the dialtrap node's REST API")
	token := flag.String("token", os.Getenv("DIALTRAP_API_TOKEN"), "the node's API token")
	budget := flag.Duration("budget", 50*time.Millisecond, "longest wait for an answer before the call goes through")
	minCount := flag.Int64("min-count", 1, "deny only numbers seen at least this often")
	flag.Parse()

	// One client for the life of the engine: it keeps connections to the node open, so a
	// check costs one round trip. No retry: within 50 ms there is no time for a second try.
	c := client.New(*node, client.WithToken(*token), client.WithRetries(1, 0, 0),
		client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}))
	if err := c.CheckURL(); err != nil {
		log.Fatal(err)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		called := f[len(f)-1]
		fmt.Println(decide(c, called, *budget, *minCount))
	}
	if err := in.Err(); err != nil {
		log.Fatal(err)
	}
}

// decide is the pre-call check: deny only on a positive answer within the budget.
func decide(c *client.Client, called string, budget time.Duration, minCount int64) string {
	v := c.CheckNumber(context.Background(), called, budget, client.WithMatch(client.MatchNational))
	ms := fmt.Sprintf("(%.1fms)", float64(v.Elapsed.Microseconds())/1000)
	switch {
	case v.Err != nil:
		// Fail open: dialtrap being slow or down must never stop calls. Log it and alert
		// on the rate of these, not on each one.
		return fmt.Sprintf("ALLOW %s fail-open: %v %s", called, v.Err, ms)
	case v.Known && v.Lookup.SeenCount >= minCount:
		return fmt.Sprintf("DENY  %s known-bad: seen %d times, last %s %s", called, v.Lookup.SeenCount,
			v.Lookup.SeenLast.Format("2006-01-02 15:04"), ms)
	}
	return fmt.Sprintf("ALLOW %s unknown %s", called, ms)
}
