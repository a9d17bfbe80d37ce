package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Events are partitioned by day. Days from the floor (made with the first partition: 92 days
// before the store was first opened) to tomorrow get a partition each when their first event
// is written (today's and tomorrow's at Open, so that midnight needs no DDL on the capture
// path). Older events (an import of old logs) go to events_old, below the floor; later ones
// (a clock far ahead) to the default partition. The default thus stays nearly empty: making a
// partition scans it, with the events table locked, to prove none of its rows belong in the
// new one.
const partitionsBack = 92 * 24 * time.Hour

// dayLayout names a day; partitions are events_YYYYMMDD.
const dayLayout = "2006-01-02"

func partitionName(day string) string { return "events_" + strings.ReplaceAll(day, "-", "") }

// now is the clock of the partitions (a variable for tests).
var now = time.Now

// ensureAhead makes events_old (once per database) and the partitions of today and
// tomorrow, and reads the floor.
func (s *Store) ensureAhead(ctx context.Context) error {
	t := now().UTC()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(partitionLock)); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT to_char(to_date(value::text, 'YYYYMMDD'), 'YYYY-MM-DD') FROM meta WHERE name = 'partition_floor'`).Scan(&s.floor)
		if err != pgx.ErrNoRows {
			return err
		}
		s.floor = t.Add(-partitionsBack).Format(dayLayout)
		if _, err := tx.Exec(ctx, `CREATE TABLE events_old PARTITION OF events FOR VALUES FROM (MINVALUE) TO ('`+s.floor+`')`); err != nil {
			return err
		}
		floor, _ := strconv.ParseInt(strings.ReplaceAll(s.floor, "-", ""), 10, 64)
		_, err = tx.Exec(ctx, `INSERT INTO meta VALUES ('partition_floor', $1)`, floor)
		return err
	})
	if err != nil {
		return fmt.Errorf("make the events partitions of %s: %w", s.where, err)
	}
	return s.ensureDays(ctx, []string{t.Format(dayLayout), t.Add(24 * time.Hour).Format(dayLayout)})
}

// ensurePartitions makes the partitions the batch's days lack.
func (s *Store) ensurePartitions(ctx context.Context, batch []*event.Event) error {
	newest := now().UTC().Add(24 * time.Hour).Format(dayLayout)
	var days []string
	s.partsMu.Lock()
	for _, e := range batch {
		if len(e.Timestamp) < len(dayLayout) {
			continue
		}
		d := e.Timestamp[:len(dayLayout)]
		if d < s.floor || d > newest || s.parts[d] || slices.Contains(days, d) {
			continue
		}
		if _, err := time.Parse(dayLayout, d); err == nil {
			days = append(days, d)
		}
	}
	s.partsMu.Unlock()
	if len(days) == 0 {
		return nil
	}
	slices.Sort(days)
	return s.ensureDays(ctx, days)
}

// ensureDays makes the partitions of days, each in a transaction of its own under an
// advisory lock (nodes making the same one take turns; the second finds it made).
func (s *Store) ensureDays(ctx context.Context, days []string) error {
	for _, d := range days {
		s.partsMu.Lock()
		done := s.parts[d]
		s.partsMu.Unlock()
		if done {
			continue
		}
		err := s.makePartition(ctx, d)
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == "23514":
			// The default partition holds events of that day (written while it was more
			// than a day ahead, or when its partition could not be made): the day stays
			// there.
		case errors.As(err, &pe) && pe.Code == "55P03":
			// A lock not granted in time (a long query on events): the events go to the
			// default partition this time; the next batch tries again.
			continue
		case err != nil:
			return fmt.Errorf("make the events partition of %s in %s: %w", d, s.where, err)
		}
		s.partsMu.Lock()
		s.parts[d] = true
		s.partsMu.Unlock()
	}
	return nil
}

func (s *Store) makePartition(ctx context.Context, day string) error {
	t, err := time.Parse(dayLayout, day)
	if err != nil {
		return err
	}
	next := t.Add(24 * time.Hour).Format(dayLayout)
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Making a partition locks the whole events table: a short wait at most, never a
		// queue of writers behind a long query.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(partitionLock)); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, partitionName(day)).Scan(&exists); err != nil || exists {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE `+partitionName(day)+` PARTITION OF events FOR VALUES FROM ('`+day+`') TO ('`+next+`')`)
		return err
	})
}

// PruneEvents deletes the raw events stamped before before (an event_timestamp), oldest
// first, and says how many went: retention (--retention). Whole days before the cutoff go as
// their partition is dropped (however many events they hold), and events_old is emptied once
// the floor is before the cutoff; then at most limit events of the day the cutoff falls in,
// and of the default partition, are deleted. The caller loops
// while a whole chunk went. The aggregates, counts and campaigns keep every count: they are
// kept apart from the events.
func (s *Store) PruneEvents(ctx context.Context, before string, limit int) (int64, error) {
	if s.readOnly {
		return 0, fmt.Errorf("database %s is open read-only", s.where)
	}
	if len(before) < len(dayLayout) {
		return 0, fmt.Errorf("retention cutoff %q is not an event_timestamp", before)
	}
	var n int64
	if s.floor <= before[:len(dayLayout)] {
		emptied, err := s.removePartition(ctx, "events_old", `TRUNCATE events_old`)
		if err != nil {
			return 0, fmt.Errorf("delete the events before %s from %s: %w", s.floor, s.where, err)
		}
		n += emptied
	}
	var parts []string
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'`)
	if err == nil {
		parts, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return 0, fmt.Errorf("list the events partitions of %s: %w", s.where, err)
	}
	slices.Sort(parts)
	for _, p := range parts {
		day, err := time.Parse("20060102", strings.TrimPrefix(p, "events_"))
		if err != nil {
			continue // not one of ours
		}
		// The partition holds [day, next day): all of it is older than before when the
		// next day starts at or before it.
		if day.Add(24*time.Hour).Format(dayLayout) > before[:len(dayLayout)] {
			break
		}
		dropped, err := s.removePartition(ctx, p, `DROP TABLE `+p)
		if err != nil {
			return n, fmt.Errorf("drop the events of %s from %s: %w", day.Format(dayLayout), s.where, err)
		}
		n += dropped
		s.partsMu.Lock()
		delete(s.parts, day.Format(dayLayout))
		s.partsMu.Unlock()
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM events WHERE (event_uuid, event_timestamp) IN
		(SELECT event_uuid, event_timestamp FROM events WHERE event_timestamp < $1 ORDER BY event_timestamp LIMIT $2)`,
		before, limit)
	if err != nil {
		return n, fmt.Errorf("delete events before %s from %s: %w", before, s.where, err)
	}
	return n + tag.RowsAffected(), nil
}

// removePartition counts a partition's events and drops or empties it (stmt). That locks the
// events table for a moment; lock_timeout keeps it from waiting behind a long query (the
// next round tries again).
func (s *Store) removePartition(ctx context.Context, name, stmt string) (n int64, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(partitionLock)); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil || !exists {
			return err // another node dropped it
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+name).Scan(&n); err != nil || n == 0 && name == "events_old" {
			return err
		}
		_, err := tx.Exec(ctx, stmt)
		return err
	})
	return n, err
}
