package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dialtrap/dialtrap/client"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/eventio"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/postgres"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// Exit codes of dialtrap check, for dialplans and scripts.
const (
	checkUnknown = 0
	checkKnown   = 1
	checkError   = 2
)

// subcommand is one of dialtrap's operator commands.
type subcommand struct {
	synopsis string // for dialtrap -h
	run      func(args []string, stdout, stderr io.Writer) int
}

// subcommands are looked up by name; set in init, as their run functions print the list.
var subcommands map[string]subcommand

// subcommandOrder is the order dialtrap -h lists them in.
var subcommandOrder = []string{"check", "export", "import", "migrate", "peers", "top", "health", "version", "block", "bgp", "completion"}

func init() {
	subcommands = map[string]subcommand{
		"check":      {"check [flags] NUMBER|IP   is it known-bad? exit 0 unknown, 1 known-bad, 2 error", runCheck},
		"export":     {"export [flags]            stored events as JSON lines or CSV", runExport},
		"import":     {"import [flags] FILE...    JSON logs, CSV exports, dialtrap or reference databases", runImport},
		"migrate":    {"migrate --from S --to S   copy every event between stores (SQLite, PostgreSQL), resumable, verified", runMigrate},
		"peers":      {"peers [flags]             a running node's peer-to-peer report", runPeers},
		"top":        {"top [flags]               a running node's attacks live: tools, countries, prefixes, targets, campaigns", runTop},
		"health":     {"health [flags]            is the node's API answering? exit 0 yes, 1 no (container health checks)", runHealth},
		"version":    {"version                   name, version, commit and Go version", runVersion},
		"block":      {"block --node URL [flags]  firewall agent: nodes' blocklists into nftables or ipset; block status", runBlock},
		"bgp":        {"bgp --node URL [flags]    BGP blackhole speaker: nodes' blocklists announced to routers; bgp status", runBGP},
		"completion": {"completion bash|zsh|fish  the shell's completion script", runCompletion},
	}
}

func subcommandUsage() string {
	var b strings.Builder
	for _, name := range subcommandOrder {
		fmt.Fprintf(&b, "  dialtrap %s\n", subcommands[name].synopsis)
	}
	return b.String()
}

// flags is a subcommand's flag set. Every subcommand reads the node's sources for the flags
// it is not given: DIALTRAP_<NAME> (and the reference's names), then the TOML file of
// -g/--config or DIALTRAP_CONFIG.
type flags struct {
	*pflag.FlagSet
	name   string
	usage  string
	about  string
	stdout io.Writer
	stderr io.Writer
}

func newFlags(name, usage, about string, stdout, stderr io.Writer) *flags {
	fs := pflag.NewFlagSet("dialtrap "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	f := &flags{FlagSet: fs, name: name, usage: usage, about: about, stdout: stdout, stderr: stderr}
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: dialtrap %s\n\n%s\n\nFlags (each also read from DIALTRAP_<NAME> and the -g file):\n%s", usage, about, fs.FlagUsages())
	}
	return f
}

// parse reads args and the other sources. It returns the exit status to end with, or -1 to
// go on: 0 after -h (usage on standard output), usageCode after a bad flag.
func (f *flags) parse(args []string, usageCode int) int {
	f.StringP("config", "g", "", "the node's TOML config file, read for flags not given")
	return f.parseOnly(args, usageCode, true)
}

// parseOnly is parse for a subcommand that has nothing to read from the node's sources
// (fill false).
func (f *flags) parseOnly(args []string, usageCode int, fill bool) int {
	f.BoolP("help", "h", false, "print this help")
	if collecting != nil {
		collecting(f)
		return exitOK
	}
	if err := f.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(f.stderr, "dialtrap %s: %v (see dialtrap %s -h)\n", f.name, err, f.name)
		return usageCode
	}
	if help, _ := f.GetBool("help"); help {
		f.Usage()
		return exitOK
	}
	if !fill {
		return -1
	}
	notices, err := config.FillSubcommand(f.FlagSet, os.LookupEnv)
	for _, n := range notices {
		fmt.Fprintf(f.stderr, "dialtrap %s: %s\n", f.name, n)
	}
	if err != nil {
		fmt.Fprintf(f.stderr, "dialtrap %s: %v\n", f.name, err)
		return usageCode
	}
	return -1
}

// fail prints a subcommand's error and returns code.
func (f *flags) fail(code int, format string, args ...any) int {
	fmt.Fprintf(f.stderr, "dialtrap %s: %s\n", f.name, fmt.Sprintf(format, args...))
	return code
}

// storeFlags are the database flags of the subcommands that read or write the store.
type storeFlags struct {
	dataDir string
	dbFile  string
	store   string
}

func (sf *storeFlags) add(f *flags) {
	f.StringVarP(&sf.dbFile, "db-file", "f", "", "SQLite database (default dialtrap.db in --data-dir), or a postgres:// URL")
	f.StringVar(&sf.dataDir, "data-dir", ".", "the node's data directory")
	f.StringVar(&sf.store, "store", "sqlite", "event store: sqlite (the file of -f), or a postgres:// URL (as the node's --store)")
}

// pgURL returns the PostgreSQL database the flags name (-f or --store), or "" for SQLite.
// A file given with -f wins over a --store the node's configuration or environment filled in.
func (sf *storeFlags) pgURL() (string, error) {
	switch {
	case postgres.IsURL(sf.dbFile):
		return sf.dbFile, nil
	case strings.Contains(sf.dbFile, "://"):
		return "", fmt.Errorf("-f %q: give an SQLite file or a postgres:// URL", config.RedactURL(sf.dbFile))
	case sf.dbFile != "":
		return "", nil
	case postgres.IsURL(sf.store):
		return sf.store, nil
	case sf.store != "sqlite":
		return "", fmt.Errorf("--store %q: use sqlite or a postgres:// URL", config.RedactURL(sf.store))
	}
	return "", nil
}

// readStore is what check and export read of a store.
type readStore interface {
	eventReader
	IP(ctx context.Context, ip string) (store.Aggregate, bool, error)
	Number(ctx context.Context, n string) (store.Aggregate, bool, error)
	MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error)
	Close() error
}

// openReadOnly opens the store for reading, changing nothing in it.
func (sf *storeFlags) openReadOnly(ctx context.Context) (readStore, error) {
	url, err := sf.pgURL()
	if err != nil {
		return nil, err
	}
	if url != "" {
		st, err := postgres.OpenReadOnly(ctx, url)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	st, err := sqlite.OpenReadOnly(ctx, sf.path())
	if err != nil {
		return nil, err
	}
	return st, nil
}

// writeStore is what import needs of a store.
type writeStore interface {
	importStore
	SetLabeler(store.Labeler)
	Close() error
}

// open opens the store for writing, bringing its schema up to date.
func (sf *storeFlags) open(ctx context.Context) (writeStore, error) {
	url, err := sf.pgURL()
	if err != nil {
		return nil, err
	}
	if url != "" {
		st, err := postgres.Open(ctx, url)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, sf.path())
	if err != nil {
		return nil, err
	}
	return st, nil
}

// path is the database file: -f as given, else the default name in --data-dir.
func (sf *storeFlags) path() string {
	if sf.dbFile == "" {
		return filepath.Join(sf.dataDir, config.DefaultDBFile)
	}
	return sf.dbFile
}

// apiFlags are the flags of the subcommands that ask a running node.
type apiFlags struct {
	url     string
	token   string
	apiAddr string
	timeout time.Duration
}

// add declares the flags; withAddr adds --api-addr, from which the default --api-url comes
// (for subcommands that always ask a node).
func (af *apiFlags) add(f *flags, urlUsage string, withAddr bool) {
	f.StringVar(&af.url, "api-url", "", urlUsage)
	f.StringVar(&af.token, "api-token", "", "bearer token of the node's API")
	if withAddr {
		f.StringVar(&af.apiAddr, "api-addr", config.DefaultAPIAddr, "the node's --api-addr, used for the default --api-url")
	}
	f.DurationVar(&af.timeout, "timeout", 5*time.Second, "give up after this long")
}

// client returns the API client; without --api-url it asks the node's --api-addr on this
// machine.
func (af *apiFlags) client() nodeAPI {
	u := af.url
	if u == "" {
		host, port, err := net.SplitHostPort(af.apiAddr)
		if err != nil {
			host, port = "127.0.0.1", "8082"
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		u = "http://" + net.JoinHostPort(host, port)
	}
	return nodeAPI{client.New(u, client.WithToken(af.token))}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

// runCheck answers whether a number or IP address is known-bad: exit 0 unknown, 1 known,
// 2 error. It reads the local database, or asks a node's API with --api-url.
func runCheck(args []string, stdout, stderr io.Writer) int {
	f := newFlags("check", "check [flags] NUMBER|IP",
		"Says whether a number or an IP address is known-bad. NUMBER is any called number as the node\n"+
			"stores it (digits, + and digits, or a SIP user such as service).\n"+
			"Exit status: 0 unknown, 1 known-bad, 2 error.", stdout, stderr)
	var sf storeFlags
	sf.add(f)
	var af apiFlags
	af.add(f, "ask this node's REST API (e.g. http://127.0.0.1:8082) instead of reading the database", false)
	match := f.String("number-match", "exact", "exact, or national (also prefixed forms: +, 00, 000, 011, 9011, 900, 9...)")
	quiet := f.BoolP("quiet", "q", false, "print nothing; the exit status says it all")
	if code := f.parse(args, checkError); code >= 0 {
		return code
	}
	if f.NArg() != 1 {
		return f.fail(checkError, "give one number or IP address (see dialtrap check -h)")
	}
	if *match != "exact" && *match != "national" {
		return f.fail(checkError, "--number-match %q: use exact or national", *match)
	}
	subject := f.Arg(0)
	ip, isIP := event.ParseIP(subject)
	if subject == "" || !utf8.ValidString(subject) {
		return f.fail(checkError, "%q is neither an IP address nor a number", subject)
	}
	ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
	defer cancel()
	var (
		known  bool
		detail string
		err    error
	)
	switch {
	case af.url != "":
		known, detail, err = checkAPI(ctx, af.client(), subject, ip, isIP, *match)
	default:
		known, detail, err = checkStore(ctx, &sf, subject, ip, isIP, *match == "national")
	}
	if err != nil {
		return f.fail(checkError, "%v", err)
	}
	if isIP {
		subject = ip
	}
	if !known {
		if !*quiet {
			fmt.Fprintf(stdout, "unknown: %s\n", subject)
		}
		return checkUnknown
	}
	if !*quiet {
		fmt.Fprintf(stdout, "known-bad: %s (%s)\n", subject, detail)
	}
	return checkKnown
}

func checkStore(ctx context.Context, sf *storeFlags, n, ip string, isIP, national bool) (bool, string, error) {
	st, err := sf.openReadOnly(ctx)
	if err != nil {
		return false, "", err
	}
	defer st.Close()
	if isIP {
		a, ok, err := st.IP(ctx, ip)
		return ok, seen(a), err
	}
	if !national || !event.ValidNumber(n) {
		a, ok, err := st.Number(ctx, n)
		return ok, seen(a), err
	}
	m, err := st.MatchNumbers(ctx, n)
	if err != nil || len(m) == 0 {
		return false, "", err
	}
	var names []string
	for _, a := range m {
		names = append(names, a.Key)
	}
	return true, "matches " + strings.Join(names, ", "), nil
}

func seen(a store.Aggregate) string {
	return seenText(strconv.FormatInt(a.Count, 10), a.LastSeen)
}

// seenText says how often and when a key was last seen: "seen 1 time", "seen 3 times".
func seenText(count, last string) string {
	times := "times"
	if count == "1" {
		times = "time"
	}
	return fmt.Sprintf("seen %s %s, last %s UTC", count, times, last)
}

// checkAPI asks a node; only the node's own "not found" counts as unknown.
func checkAPI(ctx context.Context, c nodeAPI, n, ip string, isIP bool, match string) (bool, string, error) {
	var (
		l   client.Lookup
		err error
	)
	if isIP {
		l, err = c.IP(ctx, ip)
	} else {
		l, err = c.Number(ctx, n, match)
	}
	if err != nil || !l.Known {
		return false, "", err
	}
	if len(l.MatchedNumbers) > 0 {
		var names []string
		for _, m := range l.MatchedNumbers {
			names = append(names, m.Value)
		}
		return true, "matches " + strings.Join(names, ", "), nil
	}
	return true, seenText(strconv.FormatInt(l.SeenCount, 10), l.SeenLast.Format(client.TimeLayout)), nil
}

// runExport writes every stored event, oldest first, as JSON lines or CSV.
func runExport(args []string, stdout, stderr io.Writer) int {
	f := newFlags("export", "export [flags]", "Writes every stored event, oldest first.", stdout, stderr)
	var sf storeFlags
	sf.add(f)
	format := f.String("format", "jsonl", "jsonl (lossless, one event per line as in the JSON log) or csv (for spreadsheets)")
	out := f.StringP("output", "o", "-", "write here (- for standard output)")
	since := f.String("since", "", "only events at or after this time (2026-11-23, 2026-11-23 10:00, RFC 3339, or 24h back)")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap export -h)", f.Arg(0))
	}
	if err := eventio.Format(*format).Check(); err != nil {
		return f.fail(exitUsage, "--format: %v", err)
	}
	from := ""
	if *since != "" {
		var err error
		if from, err = event.ParseSince(*since, time.Now()); err != nil {
			return f.fail(exitUsage, "--since: %v", err)
		}
	}
	bar := newProgress(stderr, "export")
	if *out == "-" && isTTY(stdout) {
		bar.tty = false // the events go to the same terminal: a bar would break their lines
	}
	if err := export(&sf, eventio.Format(*format), *out, from, stdout, bar); err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	return exitOK
}

// eventReader is what export needs of a store.
type eventReader interface {
	Events(ctx context.Context, fn func(*event.Event) error) error
}

func export(sf *storeFlags, format eventio.Format, out, since string, stdout io.Writer, bar *progress) (err error) {
	ctx, stop := signalContext()
	defer stop()
	st, err := sf.openReadOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	return writeExport(ctx, st, format, out, since, stdout, bar)
}

// writeExport writes the events of st at or after since to out; bar, drawn on a terminal
// only, shows how many of the store's events were read.
func writeExport(ctx context.Context, st eventReader, format eventio.Format, out, since string, stdout io.Writer, bar *progress) (err error) {
	var total, read, written int64
	if c, ok := st.(interface {
		CountEvents(context.Context) (int64, error)
	}); ok && bar.tty {
		total, _ = c.CountEvents(ctx) // only for the bar: without it, the bar shows no share
	}
	defer bar.done()
	dst, commit := stdout, func() error { return nil }
	if out != "-" {
		// Written beside the target and renamed at the end: an interrupted export never
		// leaves a short file that looks whole.
		f, err := os.CreateTemp(filepath.Dir(out), ".dialtrap-export-*")
		if err != nil {
			return fmt.Errorf("create %s: %w", out, err)
		}
		defer func() {
			if err != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}()
		dst = f
		commit = func() error {
			if err := f.Close(); err != nil {
				return err
			}
			return os.Rename(f.Name(), out)
		}
	}
	w, err := eventio.NewWriter(dst, format)
	if err != nil {
		return err
	}
	err = st.Events(ctx, func(e *event.Event) error {
		read++
		bar.show(read, total, written)
		if e.Timestamp < since {
			return nil
		}
		written++
		return w.Write(e)
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return commit()
}

// runImport adds the events of each file to the store, skipping those already there.
func runImport(args []string, stdout, stderr io.Writer) int {
	f := newFlags("import", "import [flags] FILE...",
		"FILE: a dialtrap JSON log or export (JSON lines or CSV), a dialtrap database, or the\n"+
			"reference product's SQLite database or JSON log. Importing twice adds nothing.", stdout, stderr)
	var sf storeFlags
	sf.add(f)
	tz := f.String("tz", "UTC", "time zone of timestamps written without one (the reference product wrote local time)")
	home := f.String("home-country", "", "ISO 3166 code (DE) national dial strings are read in for the analytics, as the node's")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() == 0 {
		return f.fail(exitUsage, "name at least one file to import (see dialtrap import -h)")
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return f.fail(exitUsage, "--tz: %v", err)
	}
	for _, path := range f.Args() {
		// Importing the target into itself would first add this version's tables to it and
		// then read them, empty: nothing imported, the source changed.
		if same(path, sf.path()) {
			return f.fail(exitUsage, "%s is the database being written (-f, --data-dir, DIALTRAP_DB_FILE or SENTRYPEER_DB_FILE): import it into another one", path)
		}
	}
	ctx, stop := signalContext()
	defer stop()
	st, err := sf.open(ctx)
	if err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	defer st.Close()
	homeCountry := strings.ToUpper(*home)
	st.SetLabeler(intel.NewLabeler(homeCountry))
	// A CPU profile of the import, for bench/import; not a documented flag.
	if p := os.Getenv("DIALTRAP_IMPORT_CPU_PROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			defer f.Close()
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	for _, path := range f.Args() {
		if err := importFile(ctx, st, path, loc, homeCountry, stdout, stderr); err != nil {
			return f.fail(exitRuntime, "%v", err)
		}
	}
	return exitOK
}

// same reports whether two paths name the same existing file.
func same(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// importStore is what import needs of a store.
type importStore interface {
	// WriteCount stores a batch and says how many of its events were not stored before.
	WriteCount(ctx context.Context, batch []*event.Event) (int, error)
}

// runHealth asks a running node's /health-check: exit 0 when the node answered, 1 when it did
// not, 2 for bad flags. It is the container image's HEALTHCHECK (the image has no curl).
func runHealth(args []string, stdout, stderr io.Writer) int {
	f := newFlags("health", "health [flags]",
		"Asks a running node's REST API (-a) whether it is up, at /health-check (no token needed).\n"+
			"Exit status: 0 the node answered OK, 1 it did not (down, not a dialtrap node, an error), 2 bad flags.", stdout, stderr)
	var af apiFlags
	af.add(f, "the node's REST API (default: http:// + --api-addr, 127.0.0.1 for a wildcard host)", true)
	quiet := f.BoolP("quiet", "q", false, "print nothing; the exit status says it all")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap health -h)", f.Arg(0))
	}
	c := af.client()
	if err := c.CheckURL(); err != nil {
		return f.fail(exitUsage, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
	defer cancel()
	v, err := c.Health(ctx)
	if err != nil {
		if !*quiet {
			fmt.Fprintf(stderr, "dialtrap health: unhealthy: %v\n", err)
		}
		return exitRuntime
	}
	if !*quiet {
		fmt.Fprintf(stdout, "ok: dialtrap %s at %s\n", v, strings.TrimRight(c.BaseURL, "/"))
	}
	return exitOK
}

// runVersion prints the version line.
func runVersion(args []string, stdout, stderr io.Writer) int {
	f := newFlags("version", "version", "Prints name, version, commit and Go version (then nop2p in a build without peer-to-peer support).", stdout, stderr)
	if code := f.parseOnly(args, exitUsage, false); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q", f.Arg(0))
	}
	fmt.Fprintln(stdout, versionLine())
	return exitOK
}

// importBatch is how many events go into one store transaction (a store without bulk
// writes), or are handed at a time from the reader to the bulk writer.
const importBatch = 2000

// importMemoryLimit is the soft limit of the Go heap during a bulk import.
const importMemoryLimit = 100 << 20

// importBulkOptions are the store's defaults (a variable for tests).
var importBulkOptions sqlite.BulkOptions

// bulkImporter is a store that takes a long import in few large transactions (SQLite).
type bulkImporter interface {
	BeginBulk(ctx context.Context, o sqlite.BulkOptions) (*sqlite.Bulk, error)
}

// importFile imports one file; home is the labeler's home country (--home-country).
func importFile(ctx context.Context, st importStore, path string, loc *time.Location, home string, stdout, stderr io.Writer) error {
	bar := newProgress(stderr, filepath.Base(path))
	var (
		res   eventio.Result
		valid int64
		added int64
		err   error
	)
	if bs, ok := st.(bulkImporter); ok {
		res, valid, added, err = importBulk(ctx, bs, path, loc, home, bar)
	} else {
		res, valid, added, err = importBatches(ctx, st, path, loc, bar)
	}
	bar.done()
	if err != nil {
		return fmt.Errorf("import %s: %w (events written before this are kept; importing again skips them)", path, err)
	}
	fmt.Fprintf(stdout, "%s: %d records, %d events added, %d already stored, %d skipped as invalid\n",
		path, res.Records, added, valid-added, res.Skipped)
	for _, e := range res.Errors {
		fmt.Fprintf(stderr, "  skipped %s\n", e)
	}
	return nil
}

// readBatches reads path's events, each enriched as capture would have, and hands them to
// send in batches of importBatch (the last one shorter); send returns the slice to fill next.
// valid counts the events read.
func readBatches(ctx context.Context, path string, loc *time.Location, bar *progress, valid *int64,
	batch []*event.Event, send func([]*event.Event) ([]*event.Event, error)) (eventio.Result, error) {
	res, err := eventio.Read(ctx, path, eventio.Options{Location: loc, Progress: func(done, total int64) {
		bar.show(done, total, *valid)
	}}, func(e *event.Event) error {
		*valid++
		enrichImported(e)
		batch = append(batch, e)
		if len(batch) < importBatch {
			return nil
		}
		var err error
		batch, err = send(batch)
		return err
	})
	if err == nil && len(batch) > 0 {
		_, err = send(batch)
	}
	return res, err
}

// importBatches writes a batch of importBatch events per transaction.
func importBatches(ctx context.Context, st importStore, path string, loc *time.Location, bar *progress) (res eventio.Result, valid, added int64, err error) {
	res, err = readBatches(ctx, path, loc, bar, &valid, nil, func(batch []*event.Event) ([]*event.Event, error) {
		// Counted by the store per batch: a node writing beside the import does not count.
		n, err := st.WriteCount(ctx, batch)
		added += int64(n)
		return batch[:0], err
	})
	return res, valid, added, err
}

// importBulk reads, parses, enriches and sums each batch on one goroutine while the store
// writes the batch before on another (on two cores they overlap); a few batches in flight
// bound the memory.
func importBulk(ctx context.Context, bs bulkImporter, path string, loc *time.Location, home string, bar *progress) (res eventio.Result, valid, added int64, err error) {
	b, err := bs.BeginBulk(ctx, importBulkOptions)
	if err != nil {
		return res, 0, 0, err
	}
	// The Go heap's share of the import's memory: the events in flight and one
	// transaction's sums need about 50 MiB; without a limit the heap grows to twice that
	// before collecting. GOMEMLIMIT, where set, wins.
	if os.Getenv("GOMEMLIMIT") == "" {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(importMemoryLimit))
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type work struct {
		events []*event.Event
		sums   *sqlite.Sums
	}
	// Batches in flight: the reader goes on while the writer leaves the lock free after
	// a commit.
	full := make(chan work, 6)
	free := make(chan []*event.Event, cap(full)+1)
	for range cap(free) {
		free <- make([]*event.Event, 0, importBatch)
	}
	var rerr error
	go func() {
		defer close(full)
		labeler := intel.NewLabeler(home) // the reader's own: its cache never waits on the writer's
		res, rerr = readBatches(rctx, path, loc, bar, &valid, <-free, func(batch []*event.Event) ([]*event.Event, error) {
			select {
			case full <- work{batch, sqlite.Sum(batch, labeler)}:
			case <-rctx.Done():
				return nil, rctx.Err()
			}
			select {
			case next := <-free:
				return next, nil
			case <-rctx.Done():
				return nil, rctx.Err()
			}
		})
	}()
	var werr error
	for w := range full {
		if werr == nil {
			if werr = b.AddSummed(ctx, w.events, w.sums); werr != nil {
				cancel() // the reader stops
			}
		}
		clear(w.events) // the events are stored: let them go
		free <- w.events[:0]
	}
	if werr == nil {
		werr = rerr
	}
	if werr != nil {
		b.Abort()
		return res, valid, b.Added(), werr
	}
	err = b.Close(ctx)
	return res, valid, b.Added(), err
}

// enrichImported names the tool and payloads of an event recorded without them (by the
// reference product, or by a node older than the analytics) from its stored message, as
// capture would have. An event that carries them keeps its own.
func enrichImported(e *event.Event) {
	if e.Tool != "" || e.UASpoofed || len(e.Payload) > 0 || e.SIPMessage == "" {
		return
	}
	raw := []byte(e.SIPMessage)
	m := sip.Parse(raw)
	intel.Enrich(&m, raw, e)
}

// progress draws a progress bar on a terminal, and nothing elsewhere (logs, pipes).
type progress struct {
	w     io.Writer
	label string
	tty   bool
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, label: label, tty: isTTY(w)}
}

// isTTY reports whether w is a terminal (not a pipe, a file or /dev/null).
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (p *progress) show(done, total, events int64) {
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	const width = 30
	fill := int(frac * width)
	fmt.Fprintf(p.w, "\r%s %3.0f%% [%s%s] %d events", p.label, frac*100,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), events)
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
