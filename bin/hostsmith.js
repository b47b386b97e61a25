#!/usr/bin/env node
// The CLI as one bundle (npm run bundle): a start loads a few files instead of hundreds.
import { main } from '../dist/bundle/cli/main.js';

main(process.argv.slice(2));
