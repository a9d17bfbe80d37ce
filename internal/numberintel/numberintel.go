// Package numberintel reads what a dialled string says about the call a fraudster wanted:
// the dial-out prefix a scanner tried to break out of a PBX with ("+", "00", "000", "011",
// "9" for an outside line and the like) and the target behind it, normalised to E.164 where
// the numbering plan allows, with its country and type (premium-rate, mobile, fixed...). The
// same target dialled behind different prefixes gets one key, so a campaign against one
// premium number is seen as one. It uses github.com/nyaruka/phonenumbers (Google's
// libphonenumber metadata); it allocates, so it runs off the capture path.
package numberintel

import (
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Info is what a dialled string says.
type Info struct {
	Dialled string `json:"dialled"`
	// Prefix is what was dialled before the target: "+", an international access code with
	// or without an outside-line digit ("00", "000", "9011", "900"), or "" for none.
	Prefix string `json:"prefix"`
	// Target is the number called: E.164 ("+4990012345") when E164, else the digits after
	// Prefix.
	Target  string `json:"target"`
	E164    bool   `json:"e164"`
	Country string `json:"country,omitempty"` // ISO 3166 region of the target, when known
	Type    string `json:"type,omitempty"`    // premium-rate, mobile, fixed, ... when known
}

// outsideLine and international are tried longest first: "9011" is an outside line and
// North America's 011 before it is "90" anything.
var (
	outsideLine   = []string{"9", "0", ""}
	international = []string{"0011", "000", "011", "010", "810", "00"}
)

var types = map[phonenumbers.PhoneNumberType]string{
	phonenumbers.FIXED_LINE: "fixed", phonenumbers.MOBILE: "mobile", phonenumbers.FIXED_LINE_OR_MOBILE: "fixed-or-mobile",
	phonenumbers.TOLL_FREE: "toll-free", phonenumbers.PREMIUM_RATE: "premium-rate", phonenumbers.SHARED_COST: "shared-cost",
	phonenumbers.VOIP: "voip", phonenumbers.PERSONAL_NUMBER: "personal", phonenumbers.PAGER: "pager",
	phonenumbers.UAN: "uan", phonenumbers.VOICEMAIL: "voicemail",
}

// Analyze reads a dialled string. home is the ISO region of the PBX the scanner attacked
// ("DE"), used for numbers dialled without an international prefix; "" leaves those as
// digits. A target the numbering plan does not know (an invented or unallocated number) is
// still split from its prefix when one was dialled: "+" and its digits, not E.164.
func Analyze(dialled, home string) Info {
	info := Info{Dialled: dialled, Target: dialled}
	// Only what a dial string holds: digits and the separators people write between them.
	// An injection payload in the To URI ("1' OR '1'='1") is no number.
	if strings.ContainsFunc(dialled, func(r rune) bool {
		return (r < '0' || r > '9') && !strings.ContainsRune("+ -.()/", r)
	}) {
		return info
	}
	d := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r == '+' {
			return r
		}
		return -1
	}, dialled)
	if d == "" || strings.LastIndexByte(d, '+') > 0 {
		return info
	}
	if rest, ok := strings.CutPrefix(d, "+"); ok {
		if !valid(&info, "+", rest) {
			info.Prefix, info.Target = "+", "+"+rest
		}
		return info
	}
	// An international access code, with or without an outside-line digit before it: the
	// reading whose remainder is a valid number wins; else the first plausible one.
	var guessPrefix, guessRest string
	for _, line := range outsideLine {
		after, ok := strings.CutPrefix(d, line)
		if !ok {
			continue
		}
		for _, intl := range international {
			rest, ok := strings.CutPrefix(after, intl)
			if !ok || len(rest) < 6 || rest[0] == '0' {
				continue
			}
			if valid(&info, line+intl, rest) {
				return info
			}
			if guessPrefix == "" {
				guessPrefix, guessRest = line+intl, rest
			}
		}
	}
	// No international prefix: a national number of home (with its trunk prefix, where home
	// has one), perhaps behind an outside line.
	if home != "" {
		ndd := phonenumbers.GetNddPrefixForRegion(home, true)
		for _, line := range []string{"", "9", "0"} {
			rest, ok := strings.CutPrefix(d, line)
			if ok && len(rest) >= 6 && strings.HasPrefix(rest, ndd) && national(&info, line, rest, home) {
				return info
			}
		}
	}
	if guessPrefix != "" {
		info.Prefix, info.Target = guessPrefix, "+"+guessRest
		return info
	}
	// A bare international number without any prefix (scanners send those too).
	if valid(&info, "", d) {
		return info
	}
	info.Target = d
	return info
}

// valid reads rest as an international number (country code first); on success it fills
// info and reports true.
func valid(info *Info, prefix, rest string) bool {
	if len(rest) < 6 || rest[0] == '0' {
		return false
	}
	n, err := phonenumbers.Parse("+"+rest, "")
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return false
	}
	fill(info, prefix, n)
	return true
}

func national(info *Info, prefix, rest, home string) bool {
	n, err := phonenumbers.Parse(rest, home)
	if err != nil || !phonenumbers.IsValidNumberForRegion(n, home) {
		return false
	}
	fill(info, prefix, n)
	return true
}

func fill(info *Info, prefix string, n *phonenumbers.PhoneNumber) {
	info.Prefix = prefix
	info.Target = phonenumbers.Format(n, phonenumbers.E164)
	info.E164 = true
	info.Country = phonenumbers.GetRegionCodeForNumber(n)
	info.Type = types[phonenumbers.GetNumberType(n)]
}

// Key groups dialled strings by target: the same number behind different prefixes has one.
func (i Info) Key() string { return i.Target }
