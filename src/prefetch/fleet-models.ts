// The fleet's usage models of images, kept in the metadata table: each host learns its own model
// of an image from the read sessions it sees (its `model/<digest>` fact, persisted with the table
// and shared with the fleet like any other fact), and the model a prefetcher uses is every host's
// merged, with the boot profile the origin store publishes for it (`publish-store --with-models`):
// the first host of a fleet to boot an image prefetches as the hosts that booted it did. An
// image with no model yet may inherit one from a related image (donors()).
import type { Catalog } from '../index/catalog.js'
import type { FactStore } from '../index/facts.js'
import type { Logger } from '../util/log.js'
import type { SessionTrace } from './trace-recorder.js'
import { type ModelDonor, UsageModel } from './usage-model.js'

export class FleetModels {
  /** the origin store's published models, by manifest digest */
  private readonly published = new Map<string, UsageModel>()

  constructor(
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly log: Logger
  ) {}

  /** A read session ended: it is added to this host's model of the image. */
  learn(tr: SessionTrace): void {
    const m = this.catalog.manifest(tr.digest)
    if (!m) return
    const firsts = new Map([...tr.firsts].filter(([i]) => m.zero[i] === 0))
    if (firsts.size === 0) return
    const model = UsageModel.fromJson(this.facts.getAs('model', this.facts.self, tr.digest)) ?? new UsageModel()
    model.addSession(firsts)
    this.facts.publishAs('model', tr.digest, model.toJson())
    this.log.info({ digest: tr.digest, chunks: firsts.size, ms: tr.durationMs }, 'learnt a read session')
  }

  /** The origin store's model of an image (JSON as published); false when it is not a model. */
  setPublished(digest: string, json: unknown): boolean {
    const m = UsageModel.fromJson(json)
    if (!m) return false
    this.published.set(digest, m)
    return true
  }

  /** The fleet's usage model of an image: every host's model merged, and the origin's. */
  model(digest: string): UsageModel {
    const models = this.facts
      .allAs('model', digest)
      .map(f => UsageModel.fromJson(f.value))
      .filter((x): x is UsageModel => x !== undefined)
    const p = this.published.get(digest)
    if (p) models.push(p)
    return UsageModel.merge(models)
  }

  /** Every other image with a model whose manifest this host knows: candidates to inherit from. */
  donors(digest: string): ModelDonor[] {
    const digests = new Set([...this.facts.allAs('model').map(f => f.name), ...this.published.keys()])
    digests.delete(digest)
    const out: ModelDonor[] = []
    for (const d of digests) {
      const manifest = this.catalog.manifest(d)
      if (manifest) out.push({ digest: d, manifest, model: this.model(d) })
    }
    return out
  }
}
