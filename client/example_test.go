package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/dialtrap/dialtrap/client"
)

// Ask whether a dialled number is known-bad, in every national form.
func ExampleClient_Number() {
	c := client.New("http://127.0.0.1:8082", client.WithToken("s3cret"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := c.Number(ctx, "+46812345678", client.WithMatch(client.MatchNational))
	switch {
	case errors.Is(err, client.ErrUnauthorized):
		log.Fatal("the node refused the token")
	case err != nil:
		log.Fatal(err)
	case l.Known:
		fmt.Printf("known-bad: seen %d times, last %s\n", l.SeenCount, l.SeenLast.Format(time.RFC3339))
		for _, m := range l.MatchedNumbers {
			fmt.Println("  stored as", m.Value)
		}
	default:
		fmt.Println("unknown")
	}
}

// The pre-call check of a PBX or a rating engine: an answer within 50 ms, or "unknown".
func ExampleClient_CheckNumber() {
	c := client.New("http://127.0.0.1:8082", client.WithToken("s3cret"))
	v := c.CheckNumber(context.Background(), "0046812345678", 50*time.Millisecond, client.WithMatch(client.MatchNational))
	if v.Err != nil {
		log.Printf("dialtrap gave no answer in time (call goes through): %v", v.Err)
	}
	if v.Known {
		fmt.Println("refuse the call: the honeypots saw this number")
	}
}

// Page through every address seen in the last day.
func ExampleClient_AllIPs() {
	c := client.New("http://127.0.0.1:8082", client.WithToken("s3cret"))
	for e, err := range c.AllIPs(context.Background(), client.ListOptions{Since: "24h", Limit: 500}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Value, e.SeenCount)
	}
}

// Keep a set in step with the node's blocklist, resuming from the last cursor after a break.
func ExampleClient_Follow() {
	c := client.New("http://127.0.0.1:8082", client.WithToken("s3cret"))
	set := map[string]time.Time{}
	err := c.Follow(context.Background(), client.StreamOptions{TTL: "24h"}, func(ch client.Change) error {
		switch ch.Op {
		case client.OpAdd:
			set[ch.IP] = time.Now().Add(ch.Timeout)
		case client.OpDel:
			delete(set, ch.IP)
		case client.OpSync:
			fmt.Println("in step:", len(set), "addresses")
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Who asked about a known-bad number, and with which token.
func ExampleClient_Hits() {
	c := client.New("http://127.0.0.1:8082", client.WithToken("s3cret"))
	p, err := c.Hits(context.Background(), client.HitsOptions{Limit: 20})
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range p.Hits {
		fmt.Println(h.Time.Format(time.RFC3339), h.Kind, h.Value, "matched", h.Matched, "by", h.Token, h.Client)
	}
}

// A 429 says how long to wait.
func ExampleRateLimitedError() {
	c := client.New("http://127.0.0.1:8082", client.WithRetries(1, 0, 0))
	_, err := c.IP(context.Background(), "203.0.113.9")
	var rl *client.RateLimitedError
	if errors.As(err, &rl) {
		fmt.Println("slow down for", rl.RetryAfter)
	}
}
