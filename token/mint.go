package token

import (
	"errors"
	"fmt"
	"time"

	twjwt "github.com/twilio/twilio-go/client/jwt"
)

// mint signs a Voice access token for identity with key, valid from now for
// ttl. It sets ValidUntil explicitly because twilio-go raises any Ttl under
// one hour to one hour; with ValidUntil the exp claim is exactly now+ttl.
func mint(s *Settings, key Key, identity string, now time.Time, ttl time.Duration) (tok string, exp time.Time, err error) {
	if !key.usable() {
		// twilio-go panics on an empty secret; never let it get that far.
		return "", time.Time{}, errors.New("mint token: signing key is not usable")
	}
	nbf := now.Unix()
	exp = time.Unix(nbf+int64(ttl/time.Second), 0).UTC()
	region := s.Region
	if region == "us1" {
		// The default region: tokens carry no twr header, as Twilio's own
		// helper libraries issue them.
		region = ""
	}
	at := twjwt.CreateAccessToken(twjwt.AccessTokenParams{
		Region:        region,
		AccountSid:    s.AccountSID,
		SigningKeySid: key.SID,
		Secret:        key.Secret,
		Identity:      identity,
		Nbf:           float64(nbf),
		Ttl:           ttl.Seconds(),
		ValidUntil:    float64(exp.Unix()),
	})
	at.AddGrant(&twjwt.VoiceGrant{
		Incoming:          twjwt.Incoming{Allow: true},
		Outgoing:          twjwt.Outgoing{ApplicationSid: s.TwiMLAppSID},
		PushCredentialSid: s.PushCredentialSID,
	})
	defer func() {
		// Belt and braces: a library panic must cost one request, not the process.
		if r := recover(); r != nil {
			err = fmt.Errorf("mint token: %v", r)
		}
	}()
	tok, err = at.ToJwt()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("mint token: %w", err)
	}
	return tok, exp, nil
}
