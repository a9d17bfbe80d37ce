package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// writeNumberKeys stores the national-match keys of the numbers new to the database (only
// the writer that inserted a number adds them).
func writeNumberKeys(ctx context.Context, tx pgx.Tx, added []string) error {
	if len(added) == 0 {
		return nil
	}
	var mk, nums []string
	for _, n := range added {
		for _, k := range event.NumberKeys(n) {
			mk, nums = append(mk, k), append(nums, n)
		}
	}
	if len(mk) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO number_keys (match_key, called_number)
		SELECT * FROM unnest($1::text[], $2::text[]) AS u(k, n) ORDER BY k COLLATE "C", n COLLATE "C"
		ON CONFLICT DO NOTHING`, mk, nums)
	return err
}

// writeCounts adds the batch's hourly dimension counts and minute counts, in key order.
func (w *batchWrite) writeCounts(ctx context.Context, tx pgx.Tx) error {
	if len(w.counts) > 0 {
		keys := make([]countKey, 0, len(w.counts))
		for k := range w.counts {
			keys = append(keys, k)
		}
		dims, hours, values, ns := make([]int32, len(keys)), make([]string, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
		for i, k := range keys {
			dims[i], hours[i], values[i], ns[i] = int32(k.dim), k.hour, k.value, w.counts[k]
		}
		if _, err := tx.Exec(ctx, `INSERT INTO event_counts AS t (dimension, hour, value, seen_count)
			SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::bigint[]) AS u(d, h, v, n)
			ORDER BY d, h COLLATE "C", v COLLATE "C"
			ON CONFLICT (dimension, hour, value) DO UPDATE SET seen_count = t.seen_count + excluded.seen_count`,
			dims, hours, values, ns); err != nil {
			return err
		}
	}
	if len(w.minutes) > 0 {
		ms, ns := make([]int64, 0, len(w.minutes)), make([]int64, 0, len(w.minutes))
		for m, n := range w.minutes {
			ms, ns = append(ms, m), append(ns, n)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO minute_counts AS t (minute, seen_count)
			SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS u(m, n) ORDER BY m
			ON CONFLICT (minute) DO UPDATE SET seen_count = t.seen_count + excluded.seen_count`, ms, ns); err != nil {
			return err
		}
	}
	return nil
}

// head is the latest campaign of a (source, tool) as the database has it.
type head struct {
	ok          bool
	id          int64
	first, last string
}

// writeCampaigns adds each run to the campaign it continues, or starts one: a pause longer
// than CampaignGap, inside the batch or since the events stored before, starts a new one
// (the rules of the SQLite store). The heads of the batch's (source, tool) pairs are locked
// first, in key order: another writer with events of the same source waits until this
// transaction commits, so two nodes never both start, or both extend, the same campaign.
func (w *batchWrite) writeCampaigns(ctx context.Context, tx pgx.Tx) error {
	if len(w.runs) == 0 {
		return nil
	}
	keys := make([]campaignKey, 0, len(w.runs))
	for k := range w.runs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b campaignKey) int {
		return cmp.Or(strings.Compare(a.ip, b.ip), strings.Compare(a.tool, b.tool))
	})
	ips, tools := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ips[i], tools[i] = k.ip, k.tool
	}
	// The no-op update locks existing heads; RETURNING reads them as locked (the latest
	// committed version, whatever this transaction's snapshot).
	rows, err := tx.Query(ctx, `INSERT INTO campaign_heads AS h (source_ip, tool)
		SELECT * FROM unnest($1::text[], $2::text[]) AS u(ip, tool) ORDER BY ip COLLATE "C", tool COLLATE "C"
		ON CONFLICT (source_ip, tool) DO UPDATE SET source_ip = h.source_ip
		RETURNING source_ip, tool, latest_id, first_seen, last_seen`, ips, tools)
	if err != nil {
		return err
	}
	heads := map[campaignKey]head{}
	for rows.Next() {
		var k campaignKey
		var id *int64
		var first, last *string
		if err := rows.Scan(&k.ip, &k.tool, &id, &first, &last); err != nil {
			rows.Close()
			return err
		}
		if id != nil && first != nil && last != nil {
			heads[k] = head{ok: true, id: *id, first: *first, last: *last}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	type growth struct {
		first, last string
		n           int64
	}
	grows := map[int64]*growth{}
	grow := func(id int64, first, last string, n int64) {
		g := grows[id]
		if g == nil {
			grows[id] = &growth{first, last, n}
			return
		}
		g.first, g.last, g.n = min(g.first, first), max(g.last, last), g.n+n
	}
	type creation struct {
		k           campaignKey
		first, last string
		n           int64
		latest      bool // becomes the head of its pair
	}
	var creates []creation
	changed := map[campaignKey]head{}
	for _, k := range keys {
		r := w.runs[k]
		idx := make([]int, len(r.times))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(r.times[a], r.times[b]) })
		latest := heads[k]
		created := -1 // index in creates of the pair's newest campaign, made by this batch
		for len(idx) > 0 {
			// The leading part of the run within the gap of each event before it.
			n := 1
			for n < len(idx) && !store.Apart(r.times[idx[n-1]], r.times[idx[n]]) {
				n++
			}
			first, last := r.times[idx[0]], r.times[idx[n-1]]
			var weight int64
			for _, i := range idx[:n] {
				weight += r.weights[i]
			}
			idx = idx[n:]
			if latest.ok && !store.Apart(latest.last, first) && !store.Apart(last, latest.first) {
				if created >= 0 && latest.id == 0 {
					c := &creates[created]
					c.first, c.last, c.n = min(c.first, first), max(c.last, last), c.n+weight
				} else {
					grow(latest.id, first, last, weight)
				}
				latest.first, latest.last = min(latest.first, first), max(latest.last, last)
				changed[k] = latest
				continue
			}
			if latest.ok && last < latest.first {
				// Older than the latest campaign: it may continue an earlier one.
				var id int64
				err := tx.QueryRow(ctx, `SELECT id FROM campaigns WHERE source_ip = $1 AND tool = $2
					AND last_seen >= $3 AND first_seen <= $4 ORDER BY last_seen DESC LIMIT 1`,
					k.ip, k.tool, store.ShiftTime(first, -store.CampaignGap), store.ShiftTime(last, store.CampaignGap)).Scan(&id)
				switch {
				case err == nil:
					grow(id, first, last, weight)
					continue
				case err != pgx.ErrNoRows:
					return fmt.Errorf("find the campaign of %s: %w", k.ip, err)
				}
			}
			creates = append(creates, creation{k: k, first: first, last: last, n: weight})
			if !latest.ok || first > latest.last {
				if created >= 0 {
					creates[created].latest = false
				}
				created = len(creates) - 1
				creates[created].latest = true
				latest = head{ok: true, first: first, last: last} // id 0: known at insert
				changed[k] = latest
			}
		}
	}
	if len(grows) > 0 {
		ids := make([]int64, 0, len(grows))
		for id := range grows {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		firsts, lasts, ns := make([]string, len(ids)), make([]string, len(ids)), make([]int64, len(ids))
		for i, id := range ids {
			g := grows[id]
			firsts[i], lasts[i], ns[i] = g.first, g.last, g.n
		}
		if _, err := tx.Exec(ctx, `UPDATE campaigns c SET first_seen = least(c.first_seen, u.f),
			last_seen = greatest(c.last_seen, u.l), seen_count = c.seen_count + u.n
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, f, l, n) WHERE c.id = u.id`,
			ids, firsts, lasts, ns); err != nil {
			return err
		}
	}
	if len(creates) > 0 {
		b := &pgx.Batch{}
		for _, c := range creates {
			r := w.runs[c.k]
			b.Queue(`INSERT INTO campaigns (source_ip, tool, country, sip_user_agent, first_seen, last_seen, seen_count)
				VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`, c.k.ip, c.k.tool, r.country, r.agent, c.first, c.last, c.n)
		}
		br := tx.SendBatch(ctx, b)
		for _, c := range creates {
			var id int64
			if err := br.QueryRow().Scan(&id); err != nil {
				br.Close()
				return err
			}
			if c.latest {
				h := changed[c.k]
				h.id = id
				changed[c.k] = h
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
	}
	if len(changed) > 0 {
		var hips, htools, hfirst, hlast []string
		var hids []int64
		for _, k := range keys {
			h, ok := changed[k]
			if !ok {
				continue
			}
			hips, htools, hids, hfirst, hlast = append(hips, k.ip), append(htools, k.tool), append(hids, h.id), append(hfirst, h.first), append(hlast, h.last)
		}
		if _, err := tx.Exec(ctx, `UPDATE campaign_heads h SET latest_id = u.id, first_seen = u.f, last_seen = u.l
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) AS u(ip, tool, id, f, l)
			WHERE h.source_ip = u.ip AND h.tool = u.tool`, hips, htools, hids, hfirst, hlast); err != nil {
			return err
		}
	}
	return nil
}
