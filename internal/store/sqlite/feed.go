package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/dialtrap/dialtrap/internal/store"
)

// ChangeSeq returns the store's epoch (random, made with the schema: a cursor from another
// database is told apart) and the change sequence of the last write.
func (s *Store) ChangeSeq(ctx context.Context) (epoch, seq int64, err error) {
	if s.version < 6 {
		return 0, 0, fmt.Errorf("database %s predates blocklist feeds: start the node once to upgrade it", s.path)
	}
	err = s.r.QueryRowContext(ctx, `SELECT
		(SELECT value FROM totals WHERE name = 'epoch'),
		(SELECT value FROM totals WHERE name = 'change_seq')`).Scan(&epoch, &seq)
	if err != nil {
		return 0, 0, fmt.Errorf("read the change sequence of %s: %w", s.path, err)
	}
	return epoch, seq, nil
}

// FeedPage returns up to limit keys of list l that f selects, in order o, after the cursor
// after (its fields of that order; the zero FeedItem starts at the beginning). Each page is
// one short read: a feed reader never holds a transaction while its client reads.
func (s *Store) FeedPage(ctx context.Context, l store.List, f store.FeedFilter, o store.FeedOrder, after store.FeedItem, limit int) ([]store.FeedItem, error) {
	if s.version < 6 {
		return nil, fmt.Errorf("database %s predates blocklist feeds: start the node once to upgrade it", s.path)
	}
	table, key, err := listOf(l)
	if err != nil {
		return nil, err
	}
	var where []string
	var args []any
	if f.Since != "" {
		where, args = append(where, "last_seen >= ?"), append(args, f.Since)
	}
	if f.Until != "" {
		where, args = append(where, "last_seen <= ?"), append(args, f.Until)
	}
	if f.MinCount > 1 {
		where, args = append(where, "seen_count >= ?"), append(args, f.MinCount)
	}
	switch f.Source {
	case store.SourceLocal:
		where = append(where, "local_count > 0")
		if f.Verified {
			where = append(where, "verified_local > 0")
		}
	case store.SourceAll:
		if f.Verified {
			where = append(where, "verified_count > 0")
		}
	default:
		where = append(where, "(local_count > 0 OR trusted_peers > 0)")
		if f.Verified {
			where = append(where, "(verified_local > 0 OR verified_trusted > 0)")
		}
	}
	var order string
	switch o {
	case store.BySeq:
		where, args = append(where, "(seq, "+key+") > (?, ?)"), append(args, after.Seq, after.Key)
		order = "seq, " + key
	case store.ByLastSeen:
		where, args = append(where, "(last_seen, "+key+") > (?, ?)"), append(args, after.LastSeen, after.Key)
		order = "last_seen, " + key
	default:
		where, args = append(where, key+" > ?"), append(args, after.Key)
		order = key
	}
	cols := `last_seen, seq, seen_count, verified_count`
	if f.KeysOnly {
		cols = `last_seen, seq` // each column read costs as much as the row's step
	}
	q := `SELECT ` + key + `, ` + cols + ` FROM ` + table +
		` WHERE ` + strings.Join(where, " AND ") + ` ORDER BY ` + order + ` LIMIT ?`
	rows, err := s.bulk.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("read the %s feed from %s: %w", table, s.path, err)
	}
	defer rows.Close()
	out := make([]store.FeedItem, 0, min(limit, 1024))
	for rows.Next() {
		var it store.FeedItem
		dest := []any{&it.Key, &it.LastSeen, &it.Seq, &it.Count, &it.Verified}
		if f.KeysOnly {
			dest = dest[:3]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read the %s feed from %s: %w", table, s.path, err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the %s feed from %s: %w", table, s.path, err)
	}
	return out, nil
}
