// Reads the project's Markdown the way a renderer does (markdown-it), for the docs checks: the
// headings' anchors (GitHub's slugs, by github-slugger), the links, and the inline code spans.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import GithubSlugger from 'github-slugger'
import MarkdownIt from 'markdown-it'

const here = path.dirname(fileURLToPath(import.meta.url))
export const ROOT = path.resolve(here, '../../..') // dist/test/docs -> project root

export interface Page {
  /** path relative to the project root */
  file: string
  anchors: Set<string>
  links: Array<{ href: string; line: number }>
  /** the text of every inline code span and fenced block line, trimmed */
  code: Set<string>
}

const md = new MarkdownIt({ html: true })

export function readPage(file: string): Page {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8')
  const tokens = md.parse(text, {})
  const slugger = new GithubSlugger()
  const page: Page = { file, anchors: new Set(), links: [], code: new Set() }
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!
    if (t.type === 'heading_open') {
      const inline = tokens[i + 1]!
      const plain = (inline.children ?? [])
        .filter(c => c.type === 'text' || c.type === 'code_inline')
        .map(c => c.content)
        .join('')
      page.anchors.add(slugger.slug(plain))
    }
    if (t.type === 'fence' || t.type === 'code_block')
      for (const l of t.content.split('\n')) if (l.trim() !== '') page.code.add(l.trim())
    for (const c of t.children ?? []) {
      if (c.type === 'link_open')
        page.links.push({ href: String(c.attrGet('href') ?? ''), line: (t.map?.[0] ?? 0) + 1 })
      if (c.type === 'code_inline') page.code.add(c.content.trim())
    }
  }
  return page
}

/** README.md and every Markdown file under docs/, as paths relative to the root. */
export function docPages(): string[] {
  const out = ['README.md']
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name)
      if (e.isDirectory()) walk(rel)
      else if (e.name.endsWith('.md')) out.push(rel)
    }
  }
  walk('docs')
  return out.sort()
}
