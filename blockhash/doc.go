// Package blockhash names full KV-cache blocks by their content: a hash
// chained over each block's tokens and its parent block's hash, rooted in
// the model's identity. Two sequences whose first k blocks hold the same
// tokens, for the same model and block size, have the same first k hashes,
// so a hash stands for the whole prefix up to and including its block.
//
// The engine keys its prefix cache by these hashes and publishes the ones
// it stores and evicts; the coordinator hashes a prompt the same way to ask
// which group already holds how much of it. Both must therefore compute
// exactly the same function, which is why it lives here, importing nothing
// of Tandem's.
//
// A hash is 64 bits of SHA-256. Where a collision would matter (reusing
// KV), the engine also compares the block's tokens; an index that
// confuses two prefixes only routes a request to a group that then
// recomputes it.
package blockhash
