// Package postgres is the store for several nodes sharing one database: PostgreSQL through a
// pgx pool. It has the methods of the SQLite store (the consumers declare what they use:
// hub.Sink, api.Store, api.Analytics, feed.StreamSource, peer.EventSource) and passes the same
// conformance suite (store/storetest).
//
// What differs from SQLite, and why:
//   - Many writers: each batch is one transaction (COPY into a staging table, then an INSERT
//     that returns only the events new to the database), so a batch retried after a lost
//     acknowledgement, or written by two nodes, counts nothing twice. Aggregates are upserts
//     in key order (no deadlock between writers); a serialization failure or deadlock is
//     retried inside Write.
//   - The change sequence of a key is the id of the transaction that last wrote it, and
//     ChangeSeq returns the oldest transaction still running, less one: a stream that
//     resumes after it never skips a batch that commits late (see ChangeSeq).
//   - Raw events are partitioned by day: retention drops whole days (see PruneEvents).
//   - No Bloom filters: a miss is one primary-key probe of a prepared statement, as cheap as
//     a bare round trip, and an in-process filter would go stale with other writers (see
//     PrepareLookups).
//   - Campaigns are kept exact with several writers by locking a head row per (source, tool)
//     instead of SQLite's in-process cache; targets are grouped at each request (no cache).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/store"
)

// migrations are applied in order; schema_version records how many have run. Append only:
// never edit one that has shipped.
//
// Text that sorts or is compared as a key is COLLATE "C": byte order, as SQLite's, whatever
// locale the database was made with (lists, feeds and cursors depend on it).
var migrations = []string{
	`CREATE TABLE meta (
		name  TEXT PRIMARY KEY,
		value BIGINT NOT NULL
	);
	-- The epoch tells a feed cursor from another database's.
	INSERT INTO meta VALUES ('epoch', floor(random() * 9007199254740990)::bigint + 1);
	-- List totals, kept on write so that a count never scans a whole table.
	CREATE TABLE totals (
		id             INT PRIMARY KEY CHECK (id = 1),
		ip_addresses   BIGINT NOT NULL,
		called_numbers BIGINT NOT NULL
	);
	INSERT INTO totals VALUES (1, 0, 0);

	-- Raw events, partitioned by day of event_timestamp (events_YYYYMMDD, made as needed;
	-- events_default takes days without one). A unique index of a partitioned table must
	-- hold the partition key: event_uuid is unique together with event_timestamp. A re-sent
	-- event has the same timestamp, so it still conflicts; an event re-sent with another
	-- timestamp would be stored twice.
	CREATE SEQUENCE events_id_seq;
	CREATE TABLE events (
		id                 BIGINT NOT NULL DEFAULT nextval('events_id_seq'),
		event_uuid         TEXT COLLATE "C" NOT NULL,
		event_timestamp    TEXT COLLATE "C" NOT NULL,
		app_name           TEXT NOT NULL,
		app_version        TEXT NOT NULL,
		created_by_node_id TEXT NOT NULL,
		collected_method   TEXT NOT NULL,
		transport_type     TEXT NOT NULL,
		source_ip          TEXT NOT NULL,
		source_port        INT NOT NULL,
		destination_ip     TEXT NOT NULL,
		destination_port   INT NOT NULL,
		called_number      TEXT NOT NULL,
		sip_method         TEXT NOT NULL,
		sip_user_agent     TEXT NOT NULL,
		sip_message        BYTEA NOT NULL, -- bytes: a message may hold NUL, which TEXT cannot
		sip_message_length INT NOT NULL,
		from_peer          BOOLEAN NOT NULL,
		peer_id            TEXT NOT NULL,
		envelope           BYTEA,
		source_verified    BOOLEAN NOT NULL,
		tool               TEXT NOT NULL,
		ua_spoofed         BOOLEAN NOT NULL,
		payload            TEXT NOT NULL,
		repeat_count       BIGINT NOT NULL,
		UNIQUE (event_uuid, event_timestamp)
	) PARTITION BY RANGE (event_timestamp);
	CREATE TABLE events_default PARTITION OF events DEFAULT;
	CREATE INDEX events_time ON events (event_timestamp, id);
	CREATE INDEX events_id ON events (id);

	CREATE TABLE ip_addresses (
		ip_address       TEXT COLLATE "C" PRIMARY KEY,
		first_seen       TEXT COLLATE "C" NOT NULL,
		last_seen        TEXT COLLATE "C" NOT NULL,
		seen_count       BIGINT NOT NULL,
		local_count      BIGINT NOT NULL,
		peers            BIGINT NOT NULL,
		trusted_peers    BIGINT NOT NULL,
		verified_count   BIGINT NOT NULL,
		verified_local   BIGINT NOT NULL,
		verified_trusted BIGINT NOT NULL,
		seq              BIGINT NOT NULL
	);
	CREATE INDEX ip_addresses_last_seen ON ip_addresses (last_seen, ip_address);
	CREATE INDEX ip_addresses_seq ON ip_addresses (seq, ip_address);
	CREATE TABLE called_numbers (
		called_number    TEXT COLLATE "C" PRIMARY KEY,
		first_seen       TEXT COLLATE "C" NOT NULL,
		last_seen        TEXT COLLATE "C" NOT NULL,
		seen_count       BIGINT NOT NULL,
		local_count      BIGINT NOT NULL,
		peers            BIGINT NOT NULL,
		trusted_peers    BIGINT NOT NULL,
		verified_count   BIGINT NOT NULL,
		verified_local   BIGINT NOT NULL,
		verified_trusted BIGINT NOT NULL,
		seq              BIGINT NOT NULL, -- no index: no number stream reads it yet, and each costs every update
		-- Written once, when the number is first stored.
		target           TEXT COLLATE "C" NOT NULL,
		target_country   TEXT NOT NULL,
		target_type      TEXT NOT NULL
	);
	CREATE INDEX called_numbers_last_seen ON called_numbers (last_seen, called_number);
	CREATE INDEX called_numbers_target ON called_numbers (target) WHERE target != '';
	CREATE TABLE number_keys (
		match_key     TEXT COLLATE "C" NOT NULL,
		called_number TEXT COLLATE "C" NOT NULL,
		PRIMARY KEY (match_key, called_number)
	);
	-- One row per (list, key, reporting peer): the per-key peers and trusted_peers counts.
	CREATE TABLE key_peers (
		list    INT NOT NULL,
		key     TEXT COLLATE "C" NOT NULL,
		peer_id TEXT COLLATE "C" NOT NULL,
		trusted BOOLEAN NOT NULL,
		PRIMARY KEY (list, key, peer_id)
	);
	CREATE TABLE event_counts (
		dimension  INT NOT NULL,
		hour       TEXT COLLATE "C" NOT NULL,
		value      TEXT COLLATE "C" NOT NULL,
		seen_count BIGINT NOT NULL,
		PRIMARY KEY (dimension, hour, value)
	);
	CREATE TABLE minute_counts (
		minute     BIGINT PRIMARY KEY, -- Unix time / 60
		seen_count BIGINT NOT NULL
	);
	CREATE TABLE campaigns (
		id             BIGSERIAL PRIMARY KEY,
		source_ip      TEXT COLLATE "C" NOT NULL,
		tool           TEXT COLLATE "C" NOT NULL,
		country        TEXT NOT NULL,
		sip_user_agent TEXT NOT NULL,
		first_seen     TEXT COLLATE "C" NOT NULL,
		last_seen      TEXT COLLATE "C" NOT NULL,
		seen_count     BIGINT NOT NULL
	);
	CREATE INDEX campaigns_source ON campaigns (source_ip, tool, last_seen);
	CREATE INDEX campaigns_last_seen ON campaigns (last_seen, id);
	-- The latest campaign of each (source, tool). A writer locks the rows of its batch's
	-- pairs (an upsert, in key order) before it reads and extends their campaigns: writers
	-- of the same source take turns, so campaigns stay exact with several nodes.
	CREATE TABLE campaign_heads (
		source_ip  TEXT COLLATE "C" NOT NULL,
		tool       TEXT COLLATE "C" NOT NULL,
		latest_id  BIGINT,
		first_seen TEXT COLLATE "C",
		last_seen  TEXT COLLATE "C",
		PRIMARY KEY (source_ip, tool)
	);`,
}

// Advisory lock keys: migrations, and the creation of partitions.
const (
	migrateLock   = 0x6469616c74726170 // "dialtrap"
	partitionLock = migrateLock + 1
)

// Store is the PostgreSQL backend.
type Store struct {
	pool     *pgxpool.Pool
	where    string // host:port/database, for messages (never the password)
	readOnly bool

	// labeler gives events' countries and number targets (SetLabeler); nil leaves them out.
	labeler store.Labeler

	floor   string // the first day with partitions of its own (YYYY-MM-DD); events_old holds those before
	partsMu sync.Mutex
	parts   map[string]bool // days (YYYY-MM-DD) known to have a partition, or to stay in the default
}

// Open connects to the database at url (postgres://user:password@host:port/database), brings
// its schema up to date and makes the partitions of today and tomorrow. Several nodes may
// open one database at once: migrations take turns on an advisory lock.
func Open(ctx context.Context, url string) (*Store, error) {
	s, err := connect(ctx, url, true)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.ensureAhead(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly connects without changing the schema (dialtrap check, export): the schema
// must be this version's. Nothing it offers writes.
func OpenReadOnly(ctx context.Context, url string) (*Store, error) {
	s, err := connect(ctx, url, false)
	if err != nil {
		return nil, err
	}
	s.readOnly = true
	var v int
	err = s.pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "42P01": // undefined_table
		v = 0
	case err != nil:
		s.Close()
		return nil, fmt.Errorf("read the schema version of %s: %w", s.where, err)
	}
	if v != len(migrations) {
		s.Close()
		return nil, fmt.Errorf("database %s has schema version %d, this dialtrap reads version %d: start a node of this version on it (--store URL) once",
			s.where, v, len(migrations))
	}
	return s, nil
}

// IsURL says whether a store name is a PostgreSQL URL rather than an SQLite file.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// connect opens the pool; a writer's connections each get a staging table.
func connect(ctx context.Context, rawURL string, writer bool) (*Store, error) {
	// pgx's own parse errors quote the URL with only the text before its first @ hidden, and
	// a password holding an unencoded @ splits elsewhere than url.Parse does: either way a
	// piece of the password would be printed. So such a URL is refused here, in words of our
	// own, and pgx's message about an unreadable URL is never shown.
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil || config.AmbiguousURL(rawURL) {
		why := ""
		if _, perr := url.Parse(rawURL); err != nil && perr == nil && !config.AmbiguousURL(rawURL) {
			// The URL is well formed, so pgx's reason (a bad sslmode, port...) quotes no
			// fragment of a mangled password; the URL it quotes is cut out all the same.
			msg := scrub(err, rawURL).Error()
			if i, j := strings.Index(msg, "`"), strings.LastIndex(msg, "`"); i >= 0 && j > i {
				msg = msg[:i] + "it" + msg[j+1:]
			}
			why = ": " + msg
		}
		return nil, fmt.Errorf("PostgreSQL URL %s cannot be read%s (use postgres://user:password@host:port/database, with @ : / ? # %% in the user name or password percent-encoded, %%40 for @)", config.RedactURL(rawURL), why)
	}
	if !strings.Contains(rawURL, "pool_max_conns") {
		// Lookups, lists, feeds and one writer at a time; the default (the CPUs, at least
		// 4) queues lookups behind slow list readers on small machines.
		cfg.MaxConns = 16
	}
	cc := cfg.ConnConfig
	where := fmt.Sprintf("%s:%d/%s", cc.Host, cc.Port, cc.Database)
	// Each connection has its own staging table for COPY; ON COMMIT DELETE ROWS empties it
	// by truncation, which leaves no dead rows (autovacuum never visits temporary tables).
	// So the pool needs sessions of its own: a pooler between node and database must pool by
	// session, not by transaction. A reader makes none (it may read from a standby).
	if writer {
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, stagingSQL)
			return err
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w (is the URL right?)", where, scrub(err, rawURL))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w (%s)", where, scrub(err, rawURL), connectHint(err, cc.User, cc.Database))
	}
	return &Store{pool: pool, where: where, parts: map[string]bool{}}, nil
}

// connectHint says what to do about a failed first connection: the server's own refusal
// (a password, a missing database or role) names what to fix; anything else is the
// server's address or the server itself.
func connectHint(err error, user, database string) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000":
			return fmt.Sprintf("check the user %q and its password in the URL, and the server's pg_hba.conf; percent-encode special characters in the password", user)
		case "3D000":
			return fmt.Sprintf("create the database (createdb -O %s %s) or fix its name in the URL", user, database)
		case "42501":
			return fmt.Sprintf("the role %q may not connect to %q: GRANT CONNECT, or use another role", user, database)
		}
	}
	return "is the server running, and the URL's host and port right?"
}

// scrub returns err with every occurrence of the URL's password replaced, so that no
// message prints it, and on one line; errors.Is and As still see err.
func scrub(err error, rawURL string) error {
	pw := ""
	if u, perr := url.Parse(rawURL); perr == nil {
		pw, _ = u.User.Password()
	}
	msg := err.Error()
	if pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	// pgx lists each attempt (TLS first, then plain, with the default sslmode=prefer) on a
	// line of its own; a message or a log line is one line.
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, ":\n\t", ": "), "\n\t", "; ")
	msg = strings.ReplaceAll(msg, "\n", " ")
	if msg == err.Error() {
		return err
	}
	return scrubbed{err, msg}
}

type scrubbed struct {
	err error
	msg string
}

func (e scrubbed) Error() string { return e.msg }
func (e scrubbed) Unwrap() error { return e.err }

// migrate applies the migrations this database lacks, one transaction each, under an
// advisory lock: nodes starting together against one database take turns, and the second
// finds the schema the first left.
func (s *Store) migrate(ctx context.Context) error {
	for {
		done, err := s.migrateStep(ctx)
		if err != nil || done {
			return err
		}
	}
}

func (s *Store) migrateStep(ctx context.Context) (done bool, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("migrate %s: %w", s.where, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
		return false, fmt.Errorf("migrate %s: %w", s.where, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL);
		INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version)`); err != nil {
		return false, fmt.Errorf("migrate %s (may this user create tables?): %w", s.where, err)
	}
	var v int
	if err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
		return false, fmt.Errorf("read the schema version of %s: %w", s.where, err)
	}
	switch {
	case v > len(migrations):
		return false, fmt.Errorf("database %s has schema version %d, newer than this dialtrap knows (%d): upgrade dialtrap",
			s.where, v, len(migrations))
	case v == len(migrations):
		return true, tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, migrations[v]); err != nil {
		return false, fmt.Errorf("migrate %s to schema version %d: %w", s.where, v+1, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, v+1); err != nil {
		return false, fmt.Errorf("migrate %s: %w", s.where, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("migrate %s to schema version %d: %w", s.where, v+1, err)
	}
	return false, nil
}

// Name implements hub.Sink.
func (s *Store) Name() string { return "postgres" }

// SetLabeler sets what derives events' source countries and number targets for the
// statistics, targets and campaigns. Call it before the first Write.
func (s *Store) SetLabeler(l store.Labeler) { s.labeler = l }

// PrepareLookups does nothing: there are no Bloom filters. A lookup is one primary-key probe
// of a statement pgx prepared on the connection (its statement cache), one round trip. A miss
// costs what a bare SELECT 1 costs on the same pool, a hit about twice that (BenchmarkLookup,
// test server on loopback, 2 cores: miss 24 us, SELECT 1 24 us, hit 48 us). A filter in this
// process would answer a miss in a fraction of a microsecond, but with other nodes writing
// it goes stale: it would say "unknown" for keys they stored until rebuilt, and keeping it
// exact would take a query per lookup, which is what it is meant to save. A miss at the
// price of the round trip any remote answer needs is kept instead.
func (s *Store) PrepareLookups() {}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}
