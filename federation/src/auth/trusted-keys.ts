// The coordinator public keys a node trusts, as a JWKS keyed by kid. Holding several keys is how
// rotation works: tokens signed by the previous key keep verifying until its kid is retired.
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { checkVerificationKeys } from "./coordinator-keys.js";
import type { SigningAlgorithm } from "./token-kinds.js";

export class TrustedKeys {
  readonly algorithms: SigningAlgorithm[];
  readonly getKey: JWTVerifyGetKey;
  readonly kids: ReadonlySet<string>;

  constructor(
    readonly jwks: JSONWebKeySet,
    where = "verification keys",
  ) {
    this.algorithms = checkVerificationKeys(jwks, where);
    this.kids = new Set(jwks.keys.map((k) => k.kid as string));
    this.getKey = createLocalJWKSet(jwks);
  }
}
