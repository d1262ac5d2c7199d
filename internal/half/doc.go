// Package half converts between float32 and the two 16-bit floating-point
// formats model weights come in: bfloat16 (BF16) and IEEE 754 binary16
// (F16). Conversions to 16 bits round to nearest, ties to even; NaN stays
// NaN (quiet), infinities and signed zeros are kept, and F16 subnormals
// are produced and read exactly.
//
// Values are carried as their raw bits (uint16) so that weight bytes can
// be reinterpreted without copying.
//
// This package imports only the standard library and must never import
// any other Tandem package.
package half
