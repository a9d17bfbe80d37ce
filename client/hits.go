package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// HitsOptions page the recorded hits, newest first.
type HitsOptions struct {
	Limit  int // page size; 0: the node's default
	Offset int
}

// Hit is one lookup that matched: what was asked, by whom, and which entry answered.
type Hit struct {
	Time      time.Time // when it was asked (UTC)
	Kind      string    // "ip" or "number"
	Value     string    // what was asked
	Matched   string    // the stored entry that matched (another form, for a national match)
	SeenCount int64     // the entry's seen_count then
	Client    string    // the asking client's address
	Token     string    // the name of the API token it used; empty without named tokens
	Source    string    // "api" (a lookup) or "policy" (the SIP policy agent)
}

// HitsPage is one page of hits; Total counts them all.
type HitsPage struct {
	Total int
	Hits  []Hit
}

// Hits lists the lookups that matched, newest first: GET /hits.
func (c *Client) Hits(ctx context.Context, o HitsOptions) (*HitsPage, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Offset > 0 {
		q.Set("offset", strconv.Itoa(o.Offset))
	}
	path := "/hits"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	r, err := c.get(ctx, path, maxBigBody, isNodeOK)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Total int `json:"hits_total"`
		Hits  []struct {
			Time      string `json:"time"`
			Kind      string `json:"kind"`
			Value     string `json:"value"`
			Matched   string `json:"matched"`
			SeenCount string `json:"seen_count"`
			Client    string `json:"client"`
			Token     string `json:"token"`
			Source    string `json:"source"`
		} `json:"hits"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		return nil, fmt.Errorf("the answer of %s is not a list of hits: %w", r.Request.URL, err)
	}
	p := &HitsPage{Total: doc.Total, Hits: make([]Hit, len(doc.Hits))}
	for i, h := range doc.Hits {
		p.Hits[i] = Hit{Time: parseTime(h.Time), Kind: h.Kind, Value: h.Value, Matched: h.Matched,
			SeenCount: parseCount(h.SeenCount), Client: h.Client, Token: h.Token, Source: h.Source}
	}
	return p, nil
}
