package main

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/token"
)

// tokenSettings maps the token section and the live edge order onto the
// provider's settings. The edge list is the same one the desk phones follow.
func tokenSettings(cfg *configs.Config) token.Settings {
	t := cfg.Token
	keys := make([]token.Key, len(t.APIKeys))
	for i, k := range t.APIKeys {
		keys[i] = token.Key{SID: k.SID, Secret: k.Secret.Value()}
	}
	return token.Settings{
		AccountSID:        t.AccountSID,
		Region:            t.Region,
		Keys:              keys,
		TwiMLAppSID:       t.TwiMLAppSID,
		PushCredentialSID: t.PushCredentialSID,
		TTL:               t.TTL,
		Edges:             append([]string(nil), cfg.Twilio.Edges...),
		AppendRoaming:     t.AppendRoaming,
		CORSOrigins:       t.CORSOrigins,
		IdentityHeader:    t.IdentityHeader,
		TrustedProxies:    t.TrustedProxies,
		RateLimit: token.RateLimit{
			PerIdentity: t.RateLimit.PerIdentity,
			PerAddress:  t.RateLimit.PerAddress,
			Window:      t.RateLimit.Window,
		},
		TwiML: twimlSettings(cfg),
	}
}

// twimlSettings maps token.twiml, with the phones it rings and the domain
// their calls come from, onto the provider's fallback TwiML app.
func twimlSettings(cfg *configs.Config) *token.TwiML {
	tw := cfg.Token.TwiML
	if tw == nil {
		return nil
	}
	s := &token.TwiML{
		AuthToken:  tw.AuthToken.Value(),
		PublicURLs: append([]string(nil), tw.PublicURLs...),
		Domain:     cfg.Twilio.Domain,
	}
	for _, n := range tw.Numbers {
		s.Numbers = append(s.Numbers, token.TwiMLNumber{Number: n.Number, User: n.User})
	}
	for _, p := range cfg.Phones {
		s.Users = append(s.Users, token.TwiMLUser{Name: p.User, TwilioUser: p.TwilioUser})
	}
	return s
}

// callEventJournal puts the calls the TwiML app's status callbacks report
// as not connected into the recent events.
func callEventJournal(j *journal) token.Option { return token.WithCallEvents(j.callEvent) }

func (j *journal) callEvent(e token.CallEvent) {
	text := fmt.Sprintf("call %s %s → %s: %s", e.CallSID, e.From, e.To, e.Status)
	if e.ErrorCode != "" {
		text += " (error " + e.ErrorCode
		if e.ErrorMessage != "" {
			text += ": " + e.ErrorMessage
		}
		text += ")"
	}
	j.add(admin.Event{At: e.At, Kind: "call_not_connected", Severity: "warn", Text: text})
}

// phoneDirectory checks browser users against the same phones directory the
// desk phones authenticate with. configs always derives the MD5 HA1, so one
// comparison serves phones configured with a password or with an ha1.
type phoneDirectory struct{ cfg *configs.Config }

var _ token.Directory = phoneDirectory{}

func (d phoneDirectory) Exists(user string) bool {
	_, ok := d.cfg.Phone(user)
	return ok
}

func (d phoneDirectory) CheckPassword(user, password string) bool {
	p, ok := d.cfg.Phone(user)
	if !ok {
		// Spend the same work as a real check so timing does not reveal
		// which users exist.
		sum := md5.Sum([]byte(user + ":" + d.cfg.SIP.Realm + ":" + password))
		_ = subtle.ConstantTimeCompare(sum[:], sum[:])
		return false
	}
	sum := md5.Sum([]byte(user + ":" + d.cfg.SIP.Realm + ":" + password))
	want, err := hex.DecodeString(p.HA1.Value())
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(sum[:], want) == 1
}

// tokenGuard lets the token endpoint share the lockout table of SIP.
type tokenGuard struct{ t *lockout.Table }

var _ token.Guard = tokenGuard{}

func (g tokenGuard) Allow(client netip.Addr, user string) (bool, time.Duration, string) {
	r, left := g.t.Check(client, user)
	switch r {
	case lockout.SourceLocked:
		return false, left, "this address is locked out"
	case lockout.UserGuarded:
		return false, left, "this user is locked out for addresses it has not logged in from before"
	}
	return true, 0, ""
}

func (g tokenGuard) Known(client netip.Addr, user string) bool { return g.t.Known(client, user) }
func (g tokenGuard) Failed(client netip.Addr, user string)     { g.t.Failed(client, user) }
func (g tokenGuard) Succeeded(client netip.Addr, user string)  { g.t.Succeeded(client, user) }
