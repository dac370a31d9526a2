// Public surface of federation auth: token minting and verification (pure functions), the key
// directory, and the gRPC-facing Authenticator and SiteStreamRegistry the services plug in.
export {
  type Access,
  type AdminPrincipal,
  mintAdminToken,
  requireAccess,
  verifyAdminToken,
} from "./admin-token.js";
export { AuthError, type AuthFailure, permissionDenied, unauthenticated } from "./auth-error.js";
export {
  checkVerificationKeys,
  type GeneratedKeyPair,
  generateSigningKeyPair,
  importSigningKey,
  isSigningAlgorithm,
  type SigningKey,
} from "./coordinator-keys.js";
export type { VerifyOptions } from "./coordinator-token.js";
export { formatDuration, parseDuration } from "./duration.js";
export {
  Authenticator,
  type AuthenticatorOptions,
  bearerToken,
  MAX_BEARER_LENGTH,
  type MetadataSource,
} from "./grpc-authenticator.js";
export {
  type BootstrapOptions,
  type BootstrapResult,
  bootstrapKeyDir,
  KEY_DIR_FILES,
  type LoadedKeyDir,
  loadSigningKeyDir,
  loadTrustedKeyDir,
  retireKey,
  rotateSigningKey,
} from "./key-dir.js";
export { OnboardingTokenIssuer } from "./onboarding-issuer.js";
export {
  checkSiteName,
  mintOnboardingToken,
  type OnboardingGrant,
  SITE_NAME_PATTERN,
  verifyOnboardingToken,
} from "./onboarding-token.js";
export { SiteStreamRegistry, type SiteStreamRegistryOptions } from "./site-stream-registry.js";
export {
  parseSitePublicKey,
  type RegisteredSite,
  type SiteLookup,
  type SitePrincipal,
  type SitePublicKey,
  SiteTokenVerifier,
  type SiteVerifierOptions,
} from "./site-token.js";
export {
  type AuthSettings,
  DEFAULT_AUTH_SETTINGS,
  DEFAULT_CLOCK_SKEW_SEC,
  DEFAULT_TTL_SEC,
  MAX_TTL_SEC,
  ROLES,
  type Role,
  SIGNING_ALGORITHMS,
  type SigningAlgorithm,
  TOKEN_TYPES,
  type TokenKind,
} from "./token-kinds.js";
export { TrustedKeys } from "./trusted-keys.js";
