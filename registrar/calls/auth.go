package calls

import (
	"errors"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// authenticate checks a phone's INVITE with digest (RFC 3261 §22.3): a
// proxy challenge (407) as a SIP proxy would send, so phones answer with
// the credentials they register with. It answers the request itself unless
// the credentials are good, and returns the authenticated user.
func (b *B2BUA) authenticate(req *sip.Request, tx sip.ServerTransaction, st *state) (string, bool) {
	var cred digest.Authorization
	found, malformed := false, false
	for _, name := range []string{"Proxy-Authorization", "Authorization"} {
		for _, h := range req.GetHeaders(name) {
			a, err := digest.ParseAuthorization(h.Value())
			if err != nil {
				malformed = malformed || errors.Is(err, digest.ErrMalformed)
				continue
			}
			if a.Realm == st.s.Realm {
				cred, found = a, true
				break
			}
		}
		if found {
			break
		}
	}
	now := b.now()
	if !found {
		if malformed {
			b.reply(tx, req, 400, "Bad Request - Malformed Authorization")
			return "", false
		}
		b.challenge(req, tx, false)
		return "", false
	}
	src := sourceOf(req).Addr()
	if b.lockout != nil {
		if refusal, _ := b.lockout.Check(src, cred.Username); refusal != lockout.Allowed {
			// Refused before the password is looked at (see package lockout).
			b.log.Debug("INVITE authentication refused before checking", "user", cred.Username, "source", req.Source(), "reason", refusal.String())
			b.reply(tx, req, 403, "Forbidden")
			return "", false
		}
	}
	lookup := func(user string) (digest.Secret, bool) {
		c, ok := st.phones.Credential(user)
		if !ok {
			return digest.Secret{}, false
		}
		return digest.Secret{Password: c.Password, HA1: c.HA1}, true
	}
	res := b.auth.Verify(registrar.DigestRequest(req, src), &cred, lookup, now)
	switch res.Outcome {
	case digest.OK:
		if b.lockout != nil {
			b.lockout.Succeeded(src, cred.Username)
		}
		return cred.Username, true
	case digest.Challenge:
		b.challenge(req, tx, false)
	case digest.Stale:
		b.challenge(req, tx, true)
	case digest.Malformed:
		b.reply(tx, req, 400, "Bad Request - "+res.Reason)
	default:
		b.metrics.authFailures.Inc()
		b.log.Debug("INVITE authentication failed", "user", cred.Username, "source", req.Source(), "reason", res.Reason)
		if b.lockout != nil {
			user := cred.Username
			if res.UnknownUser {
				user = "" // nobody to guard
			}
			b.lockout.Failed(src, user)
		}
		b.reply(tx, req, 403, "Forbidden")
	}
	return "", false
}

func (b *B2BUA) challenge(req *sip.Request, tx sip.ServerTransaction, stale bool) {
	b.send(tx, b.challengeResponse(req, stale))
}

// challengeStateless is the 407 for an INVITE without credentials, sent
// without a transaction (see screenInvite).
func (b *B2BUA) challengeStateless(req *sip.Request, tx sip.ServerTransaction) {
	res := b.challengeResponse(req, false)
	res.To().Params.Add("tag", statelessTag(req))
	b.send(tx, res)
}

func (b *B2BUA) challengeResponse(req *sip.Request, stale bool) *sip.Response {
	res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
	var buf [2]string
	for _, c := range b.auth.Challenges(buf[:0], sourceOf(req).Addr(), stale, b.now()) {
		res.AppendHeader(sip.NewHeader("Proxy-Authenticate", c))
	}
	return res
}

// twilioAuth answers Twilio's 401/407 to our INVITEs with the user's Twilio
// credentials. The last challenge is kept, so an INVITE retried at the next
// IP carries credentials at once.
type twilioAuth struct {
	user, password string
	ans            digest.Answerer
	attempts       int
}

// maxAuthAttempts bounds challenges answered per call: a second challenge
// after an answer with the same nonce means the credentials are wrong.
const maxAuthAttempts = 2

// learn takes a 401/407. It returns an error when the challenge cannot be
// answered (or was already answered too often).
func (a *twilioAuth) learn(res *sip.Response) error {
	name, _ := digest.Headers(res.StatusCode)
	var values []string
	for _, h := range res.GetHeaders(name) {
		values = append(values, h.Value())
	}
	prev := a.ans.Nonce()
	if err := a.ans.Learn(res.StatusCode, values); err != nil {
		return err
	}
	a.attempts++
	if a.attempts > maxAuthAttempts || prev != "" && a.ans.Nonce() == prev && !a.ans.Stale() {
		return errors.New("twilio credentials rejected")
	}
	return nil
}

// apply adds credentials for the last challenge, if any.
func (a *twilioAuth) apply(req *sip.Request) error {
	name, value, ok, err := a.ans.Answer(string(req.Method), req.Recipient.String(), a.user, a.password)
	if err != nil || !ok {
		return err
	}
	req.AppendHeader(sip.NewHeader(name, value))
	return nil
}
