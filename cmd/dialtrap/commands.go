package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/eventio"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// Exit codes of dialtrap check, for dialplans and scripts.
const (
	checkUnknown = 0
	checkKnown   = 1
	checkError   = 2
)

// storeFlags are the options every subcommand that reads or writes the store shares. Unset
// ones fall back to the node's environment variables, so a subcommand run beside a node
// finds the node's database.
type storeFlags struct {
	fs      *pflag.FlagSet
	dataDir string
	dbFile  string
}

func newStoreFlags(name, usage string, stderr io.Writer) *storeFlags {
	sf := &storeFlags{fs: pflag.NewFlagSet("dialtrap "+name, pflag.ContinueOnError)}
	sf.fs.SetOutput(stderr)
	sf.fs.SortFlags = false
	sf.fs.StringVarP(&sf.dbFile, "db-file", "f", "", "SQLite database (default dialtrap.db in --data-dir)")
	sf.fs.StringVar(&sf.dataDir, "data-dir", ".", "the node's data directory")
	sf.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: dialtrap %s\n\n%s", usage, sf.fs.FlagUsages())
	}
	return sf
}

// parse reads args, then the environment for flags not given.
func (sf *storeFlags) parse(args []string) error {
	if err := sf.fs.Parse(args); err != nil {
		return err
	}
	var err error
	sf.fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		if v, ok := os.LookupEnv(config.EnvName(f.Name)); ok {
			if serr := sf.fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", config.EnvName(f.Name), serr)
			}
		}
	})
	if sf.dbFile == "" {
		sf.dbFile = filepath.Join(sf.dataDir, config.DefaultDBFile)
	}
	return err
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

// runCheck answers whether a number or IP address is known-bad: exit 0 unknown, 1 known,
// 2 error. It reads the local database, or asks a node's API with --api-url.
func runCheck(args []string, stdout, stderr io.Writer) int {
	sf := newStoreFlags("check", "check [flags] NUMBER|IP\n\nExit status: 0 unknown, 1 known-bad, 2 error.", stderr)
	apiURL := sf.fs.String("api-url", "", "ask this node's REST API (e.g. http://127.0.0.1:8082) instead of reading the database")
	token := sf.fs.String("api-token", "", "bearer token for --api-url")
	match := sf.fs.String("number-match", "exact", "exact, or national (also prefixed forms: +, 00, 011, 9011, 900, 9...)")
	timeout := sf.fs.Duration("timeout", 5*time.Second, "give up after this long")
	quiet := sf.fs.BoolP("quiet", "q", false, "print nothing; the exit status says it all")
	if err := sf.parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return checkUnknown
		}
		fmt.Fprintf(stderr, "dialtrap check: %v\n", err)
		return checkError
	}
	if sf.fs.NArg() != 1 {
		fmt.Fprintln(stderr, "dialtrap check: give one number or IP address")
		return checkError
	}
	if *match != "exact" && *match != "national" {
		fmt.Fprintf(stderr, "dialtrap check: --number-match %q: use exact or national\n", *match)
		return checkError
	}
	subject := sf.fs.Arg(0)
	ip, isIP := event.ParseIP(subject)
	if !isIP && !event.ValidNumber(subject) {
		fmt.Fprintf(stderr, "dialtrap check: %q is neither an IP address nor a number (digits with an optional leading +)\n", subject)
		return checkError
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var (
		known  bool
		detail string
		err    error
	)
	switch {
	case *apiURL != "":
		known, detail, err = checkAPI(ctx, *apiURL, *token, subject, ip, isIP, *match)
	default:
		known, detail, err = checkStore(ctx, sf.dbFile, subject, ip, isIP, *match == "national")
	}
	if err != nil {
		fmt.Fprintf(stderr, "dialtrap check: %v\n", err)
		return checkError
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

func checkStore(ctx context.Context, path, n, ip string, isIP, national bool) (bool, string, error) {
	st, err := sqlite.OpenReadOnly(ctx, path)
	if err != nil {
		return false, "", err
	}
	defer st.Close()
	if isIP {
		a, ok, err := st.IP(ctx, ip)
		return ok, seen(a), err
	}
	if !national {
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
	return fmt.Sprintf("seen %d times, last %s UTC", a.Count, a.LastSeen)
}

// checkAPI asks a node. Only the node's own "not found" answer counts as unknown: a 404 from
// a wrong URL or a proxy must not pass a number as clean.
func checkAPI(ctx context.Context, base, token, n, ip string, isIP bool, match string) (bool, string, error) {
	u := strings.TrimRight(base, "/")
	if isIP {
		u += "/ip-addresses/" + url.PathEscape(ip)
	} else {
		u += "/numbers/" + url.PathEscape(n) + "?match=" + match
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, "", fmt.Errorf("--api-url %q: %w", base, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, "", fmt.Errorf("ask %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, "", fmt.Errorf("read answer of %s: %w", u, err)
	}
	var doc struct {
		Message  string `json:"message"`
		Count    string `json:"seen_count"`
		LastSeen string `json:"seen_last"`
		IPFound  string `json:"bad_actor_found"`
		NumFound string `json:"phone_number_found"`
		Matched  []struct {
			Number string `json:"called_number"`
		} `json:"matched_numbers"`
	}
	jsonErr := json.Unmarshal(body, &doc)
	fromNode := resp.Header.Get("X-Powered-By") == "dialtrap" && jsonErr == nil
	switch {
	case resp.StatusCode == http.StatusOK && fromNode && (doc.IPFound != "" || doc.NumFound != ""):
		detail := fmt.Sprintf("seen %s times, last %s UTC", doc.Count, doc.LastSeen)
		if len(doc.Matched) > 0 {
			var names []string
			for _, m := range doc.Matched {
				names = append(names, m.Number)
			}
			detail = "matches " + strings.Join(names, ", ")
		}
		return true, detail, nil
	case resp.StatusCode == http.StatusNotFound && fromNode && doc.Message != "":
		return false, "", nil
	}
	return false, "", fmt.Errorf("unexpected answer from %s: %s %.200s", u, resp.Status, body)
}

// runExport writes every stored event, oldest first, as JSON lines or CSV.
func runExport(args []string, stdout, stderr io.Writer) int {
	sf := newStoreFlags("export", "export [flags]", stderr)
	format := sf.fs.String("format", "jsonl", "jsonl (lossless, one event per line as in the JSON log) or csv (for spreadsheets)")
	out := sf.fs.StringP("output", "o", "-", "write here (- for standard output)")
	since := sf.fs.String("since", "", "only events at or after this time (2026-11-23, 2026-11-23 10:00, RFC 3339, or 24h back)")
	if err := sf.parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "dialtrap export: %v\n", err)
		return exitUsage
	}
	from := ""
	if *since != "" {
		var err error
		if from, err = event.ParseSince(*since, time.Now()); err != nil {
			fmt.Fprintf(stderr, "dialtrap export: %v\n", err)
			return exitUsage
		}
	}
	if err := export(sf.dbFile, eventio.Format(*format), *out, from, stdout); err != nil {
		fmt.Fprintf(stderr, "dialtrap export: %v\n", err)
		return exitRuntime
	}
	return exitOK
}

func export(db string, format eventio.Format, out, since string, stdout io.Writer) (err error) {
	ctx, stop := signalContext()
	defer stop()
	st, err := sqlite.OpenReadOnly(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()
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
		if e.Timestamp < since {
			return nil
		}
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
	sf := newStoreFlags("import", "import [flags] FILE...\n\nFILE: a dialtrap JSON log or export (JSON lines or CSV), a dialtrap database, or the\nreference product's SQLite database or JSON log. Importing twice adds nothing.", stderr)
	tz := sf.fs.String("tz", "UTC", "time zone of timestamps written without one (the reference product wrote local time)")
	if err := sf.parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "dialtrap import: %v\n", err)
		return exitUsage
	}
	if sf.fs.NArg() == 0 {
		fmt.Fprintln(stderr, "dialtrap import: name at least one file to import")
		return exitUsage
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		fmt.Fprintf(stderr, "dialtrap import: --tz: %v\n", err)
		return exitUsage
	}
	ctx, stop := signalContext()
	defer stop()
	st, err := sqlite.Open(ctx, sf.dbFile)
	if err != nil {
		fmt.Fprintf(stderr, "dialtrap import: %v\n", err)
		return exitRuntime
	}
	defer st.Close()
	for _, path := range sf.fs.Args() {
		if err := importFile(ctx, st, path, loc, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "dialtrap import: %v\n", err)
			return exitRuntime
		}
	}
	return exitOK
}

// importBatch is how many events go into one store transaction.
const importBatch = 2000

func importFile(ctx context.Context, st *sqlite.Store, path string, loc *time.Location, stdout, stderr io.Writer) error {
	before, err := st.CountEvents(ctx)
	if err != nil {
		return err
	}
	bar := newProgress(stderr, filepath.Base(path))
	var batch []*event.Event
	var valid int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := st.Write(ctx, batch)
		batch = batch[:0]
		return err
	}
	res, err := eventio.Read(ctx, path, eventio.Options{Location: loc, Progress: func(done, total int64) {
		bar.show(done, total, valid)
	}}, func(e *event.Event) error {
		valid++
		batch = append(batch, e)
		if len(batch) == importBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	bar.done()
	if err != nil {
		return fmt.Errorf("import %s: %w (events written before this are kept; importing again skips them)", path, err)
	}
	after, err := st.CountEvents(ctx)
	if err != nil {
		return err
	}
	added := after - before
	fmt.Fprintf(stdout, "%s: %d records, %d events added, %d already stored, %d skipped as invalid\n",
		path, res.Records, added, valid-added, res.Skipped)
	for _, e := range res.Errors {
		fmt.Fprintf(stderr, "  skipped %s\n", e)
	}
	return nil
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
	p := &progress{w: w, label: label}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
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
