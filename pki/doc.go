// Package pki provides the certificates and TLS configurations of a Tandem
// cluster: a throwaway certificate authority and the certificates it issues
// (what `tandem certs init` and `tandem up` write), certificate, key and CA
// files loaded once and reloaded when they change on disk, and the tls.Config
// of each side of a connection.
//
// # Inside the cluster: mutual TLS against the cluster's CA
//
// Every internal connection (a worker's gRPC services, the raw KV data
// plane, the TCP ring, etcd) is TLS 1.3 with a certificate on both ends, and
// a peer is trusted when its certificate chains to the cluster's CA. Host
// names are not checked: processes are reached at addresses they register
// (pod IPs), and holding a key the cluster's CA signed is what makes a
// process a member. A cluster's CA must therefore sign nothing but the
// cluster's own processes; [Init] makes one for that purpose.
// [Source.ServerConfig] with mutual TLS refuses a client without such a
// certificate during the handshake, before any byte of its own protocol is
// read.
//
// # Outside: the public API's certificate
//
// The public listeners present a certificate and key ([Files] without CA);
// clients check it the usual way, against system roots or a CA file
// ([ClientRoots]), with host names.
//
// # Reloading
//
// A [Source] re-reads its files at most once per ReloadInterval, when a
// handshake needs them, and switches to the new certificate, key and CA as
// soon as they parse and match; until then, and when they never do (a
// half-written pair), it keeps the old ones and logs why once. Connections
// already open keep the certificate they started with.
//
// It imports no Tandem package; everything that listens or dials inside the
// cluster uses it, through cmd.
package pki
