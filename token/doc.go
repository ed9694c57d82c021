// Package token issues Twilio Voice access tokens to browser softphones.
//
// A Provider answers POST /v1/token with a signed Access Token (a JWT with a
// Voice grant) and the ordered edge list the browser should hand to
// Twilio.Device, so browsers follow the same edge preference as the desk
// phones. The provider keeps no shared state: every replica given the same
// Settings issues equivalent tokens, and Client (or the browser helper served
// at /v1/sdk/edgewise.js) fails over between replica URLs.
//
// With Settings.TwiML the same listener serves a fallback TwiML app
// (POST /v1/twiml/voice and /v1/twiml/status), so every replica can be a
// Voice Fallback URL. Twilio signs each webhook with the account's auth
// token (X-Twilio-Signature: HMAC-SHA1 of the URL Twilio requested followed
// by every form parameter's name and value in name order); twilio-go's
// request validator checks it against each configured public URL, and
// anything unsigned, altered or signed for another URL gets 403. The
// signature has no timestamp or nonce: a captured request can be replayed,
// which is why Twilio should reach the app over HTTPS only. A replayed voice
// request gets TwiML back and dials nothing (only Twilio executes TwiML it
// fetched itself).
//
// The TwiML: a call to a configured number rings its user's phones with one
// <Dial><Sip> to sip:<twilio user>@<domain>.sip.twilio.com, then, if they
// did not answer, the user's browser with <Dial><Client> (the <Dial>'s
// action URL). Twilio forks a call to a registered user to every Contact on
// every edge and refuses an edge in that URI (error 32220), so the edge
// order is the one edgewise keeps the user registered in; without Enhanced
// Programmable SIP Features Twilio also refuses a second <Sip> or any other
// noun in that <Dial>, and with them it would ring them at the same time,
// hence the two steps. A call from a configured user (its phone's From
// sip:<twilio user>@<domain>.sip.twilio.com, or its browser's
// client:<identity>) to anything else dials that number with
// <Dial callerId=…><Number>, the caller ID being the user's first number.
// Anything else is refused: there is no default route out. Every dialled
// noun reports its end (statusCallback) to the /v1/twiml/status of the
// public URL the request was signed for, so failed legs are counted.
//
// The package does not read the config file; the caller converts its config
// into Settings and a Directory and calls Apply at start and on every reload.
//
// It imports nothing of edgewise; cmd/edgewise wires its guard (the
// lockout) and its directory of phones.
package token
