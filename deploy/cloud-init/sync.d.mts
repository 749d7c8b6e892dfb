/** Types for sync.mjs, which test/deploy.test.ts imports. */
/** Path on the VM -> canonical file under deploy/. */
export declare const EMBEDDED: Record<string, string>;
export declare const CLOUD_CONFIGS: string[];
export declare function sync(yaml: string): string;
