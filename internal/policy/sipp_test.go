package policy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// sippCheck is one header a SIPp scenario checks with <ereg check_it="true">: the call fails
// unless the header's value matches.
type sippCheck struct{ Header, Regexp, Var string }

type sippScenario struct {
	Name   string
	Status int
	Checks []sippCheck
}

// xmlAttr escapes s for an XML attribute value.
var xmlAttr = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

// writeScenario renders testdata/sipp/<file> for s into dir.
func writeScenario(t *testing.T, dir, file string, s sippScenario) string {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "sipp", file))
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Checks {
		s.Checks[i].Regexp = xmlAttr.Replace(s.Checks[i].Regexp)
		s.Checks[i].Var = "v" + strconv.Itoa(i)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, s); err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, c := range s.Checks {
		vars = append(vars, c.Var)
	}
	// SIPp refuses a scenario whose variables are assigned and never used.
	out := b.String()
	if len(vars) > 0 {
		out = strings.Replace(out, "</scenario>", `  <Reference variables="`+strings.Join(vars, ",")+`"/>`+"\n</scenario>", 1)
	}
	path := filepath.Join(dir, strings.ReplaceAll(s.Name, " ", "-")+".xml")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runSIPp runs one SIPp call and returns its exit code and output. SIPp exits 0 only when
// every call followed the scenario: the expected status, and every ereg check matched.
func runSIPp(t *testing.T, dir string, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", append([]string{"-m", "1", "-nostdin", "-timeout", strconv.Itoa(int(timeout.Seconds()) - 2),
		"-timeout_error", "-max_retrans", "2", "-trace_err"}, args...)...)
	cmd.Dir = dir // SIPp writes its error log in the working directory
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		logs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			out = append(out, b...)
			os.Remove(l)
		}
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("sipp: %v", err)
		return -1, ""
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func TestSIPp(t *testing.T) {
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp is not installed (scripts/test-deps.sh installs Debian's sip-tester): %v", err)
	}
	db := newStore(t, knownBad)
	national := startAgent(t, Config{Lookups: db, National: true})
	notFound := startAgent(t, Config{Lookups: db, Deny: 404})
	dir := t.TempDir()
	contact := func(a *Agent, number string) sippCheck {
		return sippCheck{Header: "Contact", Regexp: `^ *<sip:` + regexp.QuoteMeta(number) + `@127\.0\.0\.1:` + strconv.Itoa(a.UDPAddr().(*net.UDPAddr).Port) + `>$`}
	}
	decision := func(d string) sippCheck { return sippCheck{Header: "X-Dialtrap-Decision", Regexp: `^ *` + d + `$`} }
	reason := func(code int, text string) sippCheck {
		return sippCheck{Header: "Reason", Regexp: `^ *SIP;cause=` + strconv.Itoa(code) + `;text="dialtrap: ` + text + `"$`}
	}
	for _, c := range []struct {
		name      string
		agent     *Agent
		number    string
		transport string
		s         sippScenario
		fail      bool // a wrong expectation: SIPp must fail
	}{
		{name: "clean", agent: national, number: "0046812110000",
			s: sippScenario{Status: 302, Checks: []sippCheck{contact(national, "0046812110000"), decision("allow")}}},
		{name: "clean over TCP", agent: national, number: "0046812110000", transport: "t1",
			s: sippScenario{Status: 302, Checks: []sippCheck{contact(national, "0046812110000"), decision("allow")}}},
		{name: "known-bad", agent: national, number: "0046812118532",
			s: sippScenario{Status: 403, Checks: []sippCheck{decision("deny_number"), reason(403, `number 0046812118532 is known-bad \(2 reports\)`)}}},
		{name: "known-bad 404", agent: notFound, number: "0046812118532",
			s: sippScenario{Status: 404, Checks: []sippCheck{decision("deny_number"), reason(404, `number 0046812118532 is known-bad \(2 reports\)`)}}},
		{name: "national variant", agent: national, number: "004990012345",
			s: sippScenario{Status: 403, Checks: []sippCheck{decision("deny_number"), reason(403, `number 004990012345 matches known-bad \+4990012345 \(12 reports\)`)}}},
		{name: "national trunk variant", agent: national, number: "090012345",
			s: sippScenario{Status: 403, Checks: []sippCheck{decision("deny_number")}}},
		{name: "national variant without national match", agent: notFound, number: "004990012345",
			s: sippScenario{Status: 302, Checks: []sippCheck{contact(notFound, "004990012345")}}},
		// Wrong expectations: each must make SIPp fail, or the runs above prove nothing.
		{name: "negative known-bad expecting 302", agent: national, number: "0046812118532", fail: true,
			s: sippScenario{Status: 302}},
		{name: "negative wrong contact", agent: national, number: "0046812110000", fail: true,
			s: sippScenario{Status: 302, Checks: []sippCheck{contact(national, "0046812110001")}}},
		{name: "negative wrong reason", agent: national, number: "004990012345", fail: true,
			s: sippScenario{Status: 403, Checks: []sippCheck{reason(403, `number 004990012345 is known-bad \(12 reports\)`)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.s.Name = c.name
			scenario := writeScenario(t, dir, "uac.xml", c.s)
			transport := c.transport
			if transport == "" {
				transport = "u1"
			}
			code, out := runSIPp(t, dir, 20*time.Second, "-sf", scenario, "-s", c.number, "-t", transport,
				"-i", "127.0.0.1", "-p", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")), c.agent.UDPAddr().String())
			if c.fail {
				if code != 1 {
					t.Fatalf("sipp exited %d for a wrong expectation, want 1 (a failed call):\n%s", code, tail(out, 3000))
				}
				return
			}
			if code != 0 {
				t.Fatalf("sipp exited %d:\n%s", code, tail(out, 3000))
			}
		})
	}
	// Every call reached the agent and was ACKed (the ACK of a 3xx-6xx is absorbed).
	if st := national.Status(); st.Decisions["allow"] != 3 || st.Decisions["deny_number"] != 5 || st.Methods["ACK"] < 6 {
		t.Errorf("agent saw %v, %v", st.Decisions, st.Methods)
	}
}
