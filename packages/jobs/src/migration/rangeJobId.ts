/** The job id of a range's migrate-range job (one job per range). */
export function rangeJobId(rangeId: number): string {
  return `range-${rangeId}`;
}
