export { runCli } from './program.js';
export { EXIT, CliError, type ExitCode } from './errors.js';
export { ProgressMeter, countsText, createProgress, progressLine, type ProgressDisplay, type ProgressFigures, type ProgressOptions } from './progress.js';
export { readTaskSpecs, fileSource, type InputSource } from './input.js';
export { resolveToken } from './token.js';
