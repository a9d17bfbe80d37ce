package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
)

// ListOptions page a list. Lists are newest (last seen) first.
type ListOptions struct {
	// Limit is the page size; 0 asks for everything (a long list streams from the node).
	Limit int
	// Offset skips that many entries.
	Offset int
	// Since keeps entries last seen at or after it: "2026-11-23", "2026-11-23 10:00", RFC
	// 3339, or a duration back from now such as "24h".
	Since string
}

func (o ListOptions) query() string {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Offset > 0 {
		q.Set("offset", strconv.Itoa(o.Offset))
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Page is one page of a list. Total counts what Since selects, before paging.
type Page struct {
	Total   int
	Entries []Entry
}

// IPs lists stored addresses: GET /ip-addresses.
func (c *Client) IPs(ctx context.Context, o ListOptions) (*Page, error) {
	return c.list(ctx, "/ip-addresses", "ip_addresses", o)
}

// Numbers lists stored called numbers: GET /numbers.
func (c *Client) Numbers(ctx context.Context, o ListOptions) (*Page, error) {
	return c.list(ctx, "/numbers", "called_numbers", o)
}

func (c *Client) list(ctx context.Context, path, key string, o ListOptions) (*Page, error) {
	var p *Page
	err := c.open(ctx, path+o.query(), func(resp *http.Response) error {
		var doc map[string]json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			return fmt.Errorf("read the list of %s: %w", resp.Request.URL, err)
		}
		var total int
		var items []wireEntry
		if err := json.Unmarshal(doc[key+"_total"], &total); err != nil {
			return fmt.Errorf("the answer of %s has no %s_total: %w", resp.Request.URL, key, err)
		}
		if err := json.Unmarshal(doc[key], &items); err != nil {
			return fmt.Errorf("the answer of %s has no %s list: %w", resp.Request.URL, key, err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // the newline: the connection is reused
		p = &Page{Total: total, Entries: make([]Entry, len(items))}
		for i := range items {
			p.Entries[i] = items[i].entry()
		}
		return nil
	})
	return p, err
}

// DefaultPageSize is the page size of AllIPs and AllNumbers when ListOptions.Limit is 0.
const DefaultPageSize = 1000

// AllIPs pages through every stored address from o.Offset, o.Limit a page (DefaultPageSize
// when 0). An error ends the sequence, as its last pair. Entries added while it runs shift
// the pages (the list is newest first): pin o.Since, or expect a few repeats.
func (c *Client) AllIPs(ctx context.Context, o ListOptions) iter.Seq2[Entry, error] {
	return c.all(ctx, o, c.IPs)
}

// AllNumbers pages through every stored called number, as AllIPs.
func (c *Client) AllNumbers(ctx context.Context, o ListOptions) iter.Seq2[Entry, error] {
	return c.all(ctx, o, c.Numbers)
}

func (c *Client) all(ctx context.Context, o ListOptions, page func(context.Context, ListOptions) (*Page, error)) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		if o.Limit <= 0 {
			o.Limit = DefaultPageSize
		}
		for {
			p, err := page(ctx, o)
			if err != nil {
				yield(Entry{}, err)
				return
			}
			for _, e := range p.Entries {
				if !yield(e, nil) {
					return
				}
			}
			o.Offset += len(p.Entries)
			if len(p.Entries) < o.Limit || o.Offset >= p.Total {
				return
			}
		}
	}
}
