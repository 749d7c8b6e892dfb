export * from './errors.js';
export * from './duration.js';
export * from './schemas.js';
export * from './messages.js';
export * from './taskspec.js';
export * from './transport.js';
export * from './validate.js';

/** The release of this build; reported by workers at hello and by the manager in OpenAPI. */
export const PULLMAN_VERSION = '0.1.0';
