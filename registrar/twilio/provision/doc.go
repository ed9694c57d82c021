// Package provision checks and fixes, through Twilio's REST API, the SIP
// Domain that edgewise registers phones' users on. It backs
// `edgewise twilio check` and `edgewise twilio sync`.
//
// Check reads the domain <label>.sip.twilio.com and reports, each with its
// fix: the domain missing; SIP registration off; no credential list mapped
// for registration, or a phone's Twilio user in none of the mapped lists;
// the domain's Voice Authentication (below) not admitting the phones'
// calls; no Voice URL (calls from phones run that TwiML); Secure Media on
// the domain not matching twilio.media_encryption (a Secure Media domain
// refuses plain RTP with 488; SRTP needs it on).
//
// # Calls: the domain's Voice Authentication
//
// Twilio authenticates calls from devices (INVITEs) to a SIP Domain with
// the credential lists and IP access control lists mapped under its Voice
// Authentication (REST: Auth/Calls/CredentialListMappings and
// Auth/Calls/IpAccessControlListMappings), separately from the lists
// mapped for registration. With neither mapped it refuses every call; with
// both mapped it requires both. edgewise answers each INVITE's 407 with the
// calling phone's twilio_user and twilio_password, so each phone's Twilio
// user must be in a list mapped for calls. Check reports as problems: no
// list of either kind mapped for calls; IP access control lists alone (any
// device at a listed address could then call as anyone, and the phones'
// users are not checked); a phone's Twilio user in none of the calls
// lists. A mapped IP access control list is a notice, not a problem:
// edgewise's public address must be in it, and Check cannot see the
// address Twilio sees.
//
// Sync puts every phone's Twilio user into the domain's registration
// credential lists: when none is mapped it creates the list "edgewise
// <label>" (or reuses an unmapped one of that name a previous run left) and
// maps it; missing users are created in the list named so, or else in the
// first mapped list. When no credential list is mapped for calls it maps
// that list for calls too (and any other registration list holding a
// phone's user, so no user needs a second copy); lists already mapped for
// calls are left as they are, since who may call is the operator's choice,
// and a phone whose user is in none of them gets a note. It prints each
// change as it is made.
//
//   - Passwords. Twilio never returns a credential's password, so sync
//     cannot tell whether one differs from the config. Existing credentials
//     are left alone, which keeps a second run a no-op that says so;
//     UpdatePasswords (--update-passwords) sets every phone's password from
//     the config and reports each as "password set", changed or not.
//   - Prune (--prune) deletes credentials of the mapped lists (for
//     registration or calls) that no phone uses; without it they are
//     listed as kept. Any credential in a mapped list can register on the
//     domain or call through it, so these are the ones that matter.
//     UpdatePasswords likewise sets a phone's password in every mapped
//     list that holds its user.
//   - DryRun prints what would change and changes nothing.
//   - Nothing is sent before the config's users and passwords pass
//     Twilio's rules (user at most 32 characters; password at least 12
//     characters, upper and lower case and a digit), so a bad phone does
//     not leave half a sync behind.
//
// # REST, edges and failures
//
// REST implements API with twilio-go: twilio.NewRestClientWithParams with
// the account's API key, and the generated 2010-04-01 SIP services. Each
// request goes to api.<edge>.<region>.twilio.com (twilio-go's SetEdge and
// SetRegion) for the configured edges in order. A request that fails at the
// transport level (no connection, DNS, TLS, timeout) or gets a 5xx moves to
// the next edge, which then serves the following requests; a 4xx never
// does: it is Twilio's answer (APIError; 401 is a wrong API key). A create
// that may already have reached Twilio (a timeout or 5xx after the request
// was sent) is not repeated on another edge, since that could create it
// twice: the error says so, and running sync again completes the work.
//
// The HTTP client resolves *.twilio.com through twilio.dns_server when one
// is set (else the system resolver), trusts the system roots plus
// twilio.rest.ca_file, and honours HTTPS_PROXY. Settings.Port dials another
// port than 443: tests point it, with dns_server and ca_file, at edgesim's
// REST listeners; the edgewise binary takes it from
// EDGEWISE_TWILIO_REST_PORT, which exists for those tests only.
//
// It imports nothing of edgewise: cmd/edgewise turns the config into its
// Settings and Want.
package provision
